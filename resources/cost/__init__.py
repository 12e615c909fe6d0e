"""What a run costs and what it will cost: usage per stage, the ledger, prices and the plan's projection.

- :mod:`~resources.cost.usage` - the process-wide tally engines count tokens into, and the ``Meter`` of one stage
  (wall, CPU and accelerator seconds, peak memory, tokens, examples, reuse)
- :mod:`~resources.cost.prices` - an optional price table turning usage into money
- :mod:`~resources.cost.ledger` - one ledger table per run (a row per step), per-stage totals, Montessori's overhead
- :mod:`~resources.cost.plan` - ``montessori plan``: preview samples, measure this machine's rates, project a run
"""
