"""Influence score cache: unchanged candidates are never scored twice.

Scores are keyed by (student version, reference set version, method and its parameters) per file,
and by candidate content hash (``candidate_id``) per row, under ``{tables}/influence_cache/``.
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

from resources.storage import TableStore

SCORE_COLUMNS = ["loss_before", "loss_after", "loss_null_step", "influence"]
CACHE_SCHEMA = {"candidate_id": pl.String, **{c: pl.Float64 for c in SCORE_COLUMNS}}


class InfluenceCache:
    """Cached scores for one (student, reference set, method) combination."""

    def __init__(self, tables_base: str, student_version: str, reference_version: str, method: dict) -> None:
        key = json.dumps([student_version, reference_version, method], sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.store = TableStore(tables_base)
        self.path = self.store.location("influence_cache", self.key)

    def load(self) -> pl.DataFrame:
        """All cached scores (empty when none)."""
        if not self.path.exists():
            return pl.DataFrame(schema=CACHE_SCHEMA)
        return TableStore.read(self.path).select(list(CACHE_SCHEMA))

    def save(self, scores: pl.DataFrame) -> None:
        """Add ``scores`` (candidate_id + score columns) to the cache, published atomically."""
        merged = pl.concat([self.load(), scores.select(list(CACHE_SCHEMA))]).unique("candidate_id", keep="last")
        self.store.write(merged.sort("candidate_id"), self.path, {"cache_key": self.key})
