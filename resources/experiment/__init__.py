"""Controlled experiments: does the tuned teacher's data teach better?

- :mod:`~resources.experiment.statistics` - per-arm summaries, paired differences, intervals, p-values, effect sizes
- :mod:`~resources.experiment.preregistration` - hypotheses and criteria frozen in RESULTS.md before a run
- :mod:`~resources.experiment.results` - analysis against the criteria, the markdown report and its plot
- :mod:`~resources.experiment.runner` - resumable (arm, replicate) jobs, one JSON record each
- :mod:`~resources.experiment.diagnostics` - why a tuned teacher may not teach better
- :mod:`~resources.experiment.on_task` - is an instruction on the arithmetic task?
- :mod:`~resources.experiment.effect_design` - the effect experiment's arms and hypotheses H1-H4
"""
