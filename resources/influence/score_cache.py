"""Influence score cache: unchanged candidates are never scored twice.

Scores are keyed by (student version, reference set version, method and its parameters) per file,
and by candidate content hash (``candidate_id``) per row, under ``influence_cache/{key}/`` of the store it is
given (the pipeline's cache store: ``storage.cache``, by default the tables path).
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

from resources.storage.tables import TableStore, frame_hash

SCORE_COLUMNS = ["loss_before", "loss_after", "loss_null_step", "influence"]
LOSS_COLUMN = "candidate_loss"  # the warm student's own loss on the candidate
CACHE_SCHEMA = {"candidate_id": pl.String, **{c: pl.Float64 for c in [*SCORE_COLUMNS, LOSS_COLUMN]}}


class InfluenceCache:
    """Cached scores for one (student, reference set, method) combination."""

    def __init__(self, store: TableStore, student_version: str, reference_version: str, method: dict) -> None:
        # the cached columns are part of the key: files written with other columns are never read
        key = json.dumps([student_version, reference_version, method, list(CACHE_SCHEMA)], sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.store = store
        self.folder = self.store.base / "influence_cache" / self.key

    def load(self) -> pl.DataFrame:
        """All cached scores (empty when none)."""
        files = sorted(self.folder.glob("*.parquet"))
        parts = [TableStore.read(path, self.store.policy).select(list(CACHE_SCHEMA)) for path in files]
        merged = pl.concat([pl.DataFrame(schema=CACHE_SCHEMA), *parts])
        return merged.unique("candidate_id", keep="first", maintain_order=True)

    def save(self, scores: pl.DataFrame) -> None:
        """Add ``scores`` (candidate_id + score columns) as one new file, published atomically; shards
        scoring in parallel each write their own file, so no writer overwrites another."""
        part = scores.select(list(CACHE_SCHEMA)).sort("candidate_id")
        self.store.write(part, self.folder / f"{frame_hash(part)[:16]}.parquet", {"cache_key": self.key})
