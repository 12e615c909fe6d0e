"""From a per-candidate signal to what the teacher learns from.

- :mod:`~resources.preference.pairs` - signals (influence, student loss, random) and per-prompt chosen/rejected pairs
- :mod:`~resources.preference.review` - a person's review of the pairs: the sheet, keep / drop / swap, its checks
- :mod:`~resources.preference.weighting` - influence-derived sample weights and curriculum order
- :mod:`~resources.preference.selection` - keep a share of rows by influence, student loss or at random (``select``)
"""
