"""Engine tests: one folder per concern of ``resources/``, no Dagster."""
