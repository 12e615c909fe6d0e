"""Uses of influence beyond preference pairs: curriculum order and per-sample weights of a dataset."""

from __future__ import annotations

import polars as pl

WEIGHT_CLIP = 2.0  # standardized influence is clipped to ±this before exponentiation


def sample_weights(influence: pl.Series) -> pl.Series:
    """Weights with mean 1 that grow with influence: ``exp(clip(z, ±2))`` of the standardized influence,
    normalized; all 1 when every score is equal."""
    std = influence.std() or 0.0
    if influence.len() < 2 or std == 0.0:
        return pl.Series("sample_weight", [1.0] * influence.len())
    raw = ((influence - influence.mean()) / std).clip(-WEIGHT_CLIP, WEIGHT_CLIP).exp()
    return (raw / raw.mean()).alias("sample_weight")


def curriculum(dataset: pl.DataFrame) -> pl.DataFrame:
    """Most helpful rows (highest influence on the reference loss) first; ties keep generated order."""
    return dataset.sort("influence", descending=True, maintain_order=True)
