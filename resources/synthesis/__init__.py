"""Instruction synthesis (the teacher writes instructions and answers).

- :mod:`~resources.synthesis.synthesize` - few-shot prompt styles, ``SynthesisParams``, ``synthesize``
  (every sample kept with its verdict)
- :mod:`~resources.synthesis.text_filters` - parse the teacher's output, the official and extended
  filters, ROUGE-L dedup
- :mod:`~resources.synthesis.decontamination` - generated rows matched against the reference and held-out sets
  (shared n-grams, ROUGE-L near-duplicates)
"""
