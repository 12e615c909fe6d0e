"""Whole-graph tests: the CLI, staleness, settings, storage back ends (S3, PostgreSQL), Kubernetes wiring."""
