"""Influence score cache: unchanged candidates are never scored twice.

Scores are keyed by (student version, reference set version, method and its parameters) per file,
and by candidate content hash (``candidate_id``) per row, under ``{tables}/influence_cache/{key}/``.
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

from resources.storage import TableStore, frame_hash

SCORE_COLUMNS = ["loss_before", "loss_after", "loss_null_step", "influence"]
CACHE_SCHEMA = {"candidate_id": pl.String, **{c: pl.Float64 for c in SCORE_COLUMNS}}


class InfluenceCache:
    """Cached scores for one (student, reference set, method) combination."""

    def __init__(self, tables_base: str, student_version: str, reference_version: str, method: dict) -> None:
        key = json.dumps([student_version, reference_version, method], sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.store = TableStore(tables_base)
        self.folder = self.store.base / "influence_cache" / self.key

    def load(self) -> pl.DataFrame:
        """All cached scores (empty when none)."""
        parts = [TableStore.read(p).select(list(CACHE_SCHEMA)) for p in sorted(self.folder.glob("*.parquet"))]
        merged = pl.concat([pl.DataFrame(schema=CACHE_SCHEMA), *parts])
        return merged.unique("candidate_id", keep="first", maintain_order=True)

    def save(self, scores: pl.DataFrame) -> None:
        """Add ``scores`` (candidate_id + score columns) as one new file, published atomically; shards
        scoring in parallel each write their own file, so no writer overwrites another."""
        part = scores.select(list(CACHE_SCHEMA)).sort("candidate_id")
        self.store.write(part, self.folder / f"{frame_hash(part)[:16]}.parquet", {"cache_key": self.key})
