"""Local data influence of a candidate on the student's reference loss.

- :mod:`~resources.influence.engines` - ``ExactInfluence``, ``FirstOrderInfluence`` (one AdamW step from the warm
  state, to first order) and ``ProjectedInfluence`` (first-order through stored, randomly projected updates)
- :mod:`~resources.influence.per_example_grads` - per-example gradients from one batched backward pass
- :mod:`~resources.influence.projection` - seeded two-sided sign projections, per parameter tensor
- :mod:`~resources.influence.feature_store` - projected candidate updates keyed by warm student, candidate and
  projection: a new reference set re-scores stored candidates without a backward pass
- :mod:`~resources.influence.scoring` - score candidates with an engine, the cache, shards and their merge
- :mod:`~resources.influence.score_cache` - scores keyed by student, reference set and method: never scored twice
- :mod:`~resources.influence.paper_loop` - the authors' reload-step-measure loop, kept as the benchmarks' baseline
"""
