"""Controlled experiments: does the tuned teacher's data teach better?

- :mod:`~resources.experiment.statistics` - per-arm summaries, paired differences, intervals, p-values, effect sizes
- :mod:`~resources.experiment.preregistration` - hypotheses and criteria frozen in RESULTS.md before a run
- :mod:`~resources.experiment.results` - analysis against the criteria, the markdown report and its plot
- :mod:`~resources.experiment.runner` - resumable (arm, replicate) jobs, one JSON record each
- :mod:`~resources.experiment.diagnostics` - why a tuned teacher may not teach better
- :mod:`~resources.experiment.on_task` - is an instruction on the task? (arithmetic, keywords or a regex)
- :mod:`~resources.experiment.effect_design` - the effect experiment's arms and hypotheses H1-H4
- :mod:`~resources.experiment.links_design` - links 1-2 of the chain: selection arms, teacher shift, L1-L2
- :mod:`~resources.experiment.design_key` - which stored records belong to which design (settings, file contents)
"""
