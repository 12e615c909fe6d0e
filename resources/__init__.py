"""Engines: *how* each stage is done, as plain Python with no Dagster import, usable and testable alone.

One subpackage per concern; each ``__init__`` is a table of contents of its modules:

- :mod:`resources.generation` - text generation backends (transformers, vLLM) and the resumable chunk cache
- :mod:`resources.synthesis` - few-shot prompts, sampling, parsing, filters, near-duplicate removal
- :mod:`resources.training` - tokenization and losses, warm-up, TRL DPO/SFT, multi-GPU launch, warm-student reuse
- :mod:`resources.influence` - local-influence engines, per-example gradients, scoring with cache and shards
- :mod:`resources.preference` - preference pairs from a signal, influence-derived weights and curricula
- :mod:`resources.evaluation` - student SFT evaluation, judge, diversity, report plots
- :mod:`resources.storage` - immutable tables and checkpoints (local or S3), user data files, retry, prune, export
- :mod:`resources.experiment` - statistics, pre-registration, resumable runner, diagnostics, the effect design
- :mod:`resources.cost` - what a stage used (tally, meter), prices, the per-run cost ledger, the ``plan`` projection

Shared by several concerns: :mod:`resources.models` (model sources and loading) and :mod:`resources.quiet`
(no third-party progress bars). Dagster's resources, the typed settings the assets declare, live in
:mod:`assets.config`.
"""
