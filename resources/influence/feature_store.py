"""Influence feature store: each candidate's projected AdamW update, built once per warm student, reused by every
reference set.

A candidate's update from the warm state does not depend on the reference set; only its dot product with the
reference gradient does. So the projected influence method (:class:`~resources.influence.engines.ProjectedInfluence`)
stores each candidate's feature vector (and the warm student's own loss on it) here, and scoring a new reference set
costs one reference gradient and dot products.

Files are keyed by (warm student version, the projection, and every setting that shapes a candidate's update:
parameters included, encoding, compute precision) per folder, and by candidate content hash (``candidate_id``) per
row, under ``influence_features/{key}/`` of the store it is given (the pipeline's cache store: ``storage.cache``, so
shared by every profile and run, like :mod:`~resources.influence.score_cache`). Each built chunk is one file,
published atomically: a killed build resumes from its last finished chunk, and shards building in parallel never
overwrite one another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from resources.storage.tables import TableStore, frame_hash

FOLDER = "influence_features"
LAYOUT = "v1"  # candidate_id, candidate_loss, features (float32 array): part of the key


@dataclass(frozen=True)
class StoredFeatures:
    """Candidates' rows from the store: ids, the warm student's loss on each, and their feature matrix
    (``(candidates, features)`` float32)."""

    candidate_ids: list[str]
    candidate_loss: list[float]
    features: torch.Tensor


class FeatureStore:
    """Stored feature vectors for one (warm student, feature settings) combination."""

    def __init__(self, store: TableStore, student_version: str, settings: dict) -> None:
        key = json.dumps([student_version, settings, LAYOUT], sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.store = store
        self.folder = store.base / FOLDER / self.key

    def load(self, candidate_ids: list[str] | None = None) -> StoredFeatures:
        """The stored rows of ``candidate_ids`` that the store holds, in that order (all rows, in the store's order,
        when None); each id once."""
        wanted = None if candidate_ids is None else set(candidate_ids)
        ids: list[str] = []
        losses: list[float] = []
        parts: list[np.ndarray] = []
        for path in sorted(self.folder.glob("*.parquet")):
            table = TableStore.read(path, self.store.policy)
            keep = [i for i, c in enumerate(table["candidate_id"].to_list()) if wanted is None or c in wanted]
            if keep:
                table = table[keep]
                ids.extend(table["candidate_id"].to_list())
                losses.extend(table["candidate_loss"].to_list())
                parts.append(table["features"].to_numpy())
        features = torch.from_numpy(np.concatenate(parts)) if parts else torch.empty(0, 0)
        first = {}
        for row, candidate in enumerate(ids):
            first.setdefault(candidate, row)
        order = list(first.values()) if candidate_ids is None else [first[c] for c in dict.fromkeys(candidate_ids)
                                                                    if c in first]
        picked = torch.tensor(order, dtype=torch.long)
        return StoredFeatures([ids[r] for r in order], [losses[r] for r in order],
                              features[picked] if order else torch.empty(0, 0))

    def save(self, candidate_ids: list[str], candidate_loss: list[float], features: torch.Tensor) -> None:
        """Add one chunk of candidates as one new file, published atomically."""
        table = pl.DataFrame({
            "candidate_id": pl.Series(candidate_ids, dtype=pl.String),
            "candidate_loss": pl.Series(candidate_loss, dtype=pl.Float64),
            "features": pl.Series(features.detach().cpu().float().numpy()),
        })
        name = hashlib.sha256((frame_hash(table.select("candidate_id")) + self.key).encode()).hexdigest()[:16]
        self.store.write(table, self.folder / f"{name}.parquet", {"feature_key": self.key})
