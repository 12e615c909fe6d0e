"""Warm-student reuse: a warm-up with the same inputs is trained once.

Warm-up is deterministic for its inputs (the base student's files, the warm-up rows in order, the warm-up
configuration with its seed, the encoding, the device type and precision), so a second run with the same inputs
(another signal's pipeline run in the effect experiment, a rerun after a wipe of the tables) can take the
checkpoint the first run published instead of training again. A record under ``warm_student_cache/{key}.json``
of the cache store points at that checkpoint; it is used only while the checkpoint is still complete in the
checkpoint store (a removed checkpoint means: train again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch
from upath import UPath

from resources.cost.usage import TALLY
from resources.models import resolve_dtype
from resources.storage.tables import (
    MANIFEST_FILE,
    CheckpointStore,
    PublishedCheckpoint,
    TableStore,
    folder_hash,
    frame_hash,
    publish_bytes,
    read_bytes,
)
from resources.training.warm_start import train_warm_student
from resources.training.warmup import WarmupParams


class WarmStudentCache:
    """The record of one warm-up's ``inputs`` (anything JSON-serializable that determines the weights) whose
    checkpoint is published in ``checkpoints``; records are kept in the ``store`` (the cache store)."""

    def __init__(self, store: TableStore, checkpoints: CheckpointStore, inputs: object) -> None:
        key = json.dumps([str(checkpoints.base), inputs], sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path: UPath = store.base / "warm_student_cache" / f"{self.key}.json"
        self.policy = store.policy

    def load(self) -> tuple[PublishedCheckpoint, list[float]] | None:
        """The published checkpoint and warm-up losses of an earlier warm-up with these inputs, or None when
        there was none or its checkpoint is no longer complete in the checkpoint store."""
        if not self.path.exists():
            return None
        record = json.loads(read_bytes(self.path, self.policy))
        if not (UPath(record["uri"]) / MANIFEST_FILE).exists():
            return None
        return PublishedCheckpoint(record["uri"], record["content_hash"]), record["losses"]

    def save(self, published: PublishedCheckpoint, losses: list[float]) -> None:
        """Record that these inputs gave ``published`` after ``losses``."""
        record = {"uri": published.uri, "content_hash": published.content_hash, "losses": losses}
        publish_bytes(self.path, json.dumps(record).encode(), self.policy)


def warm_student_checkpoint(
    student_folder: str, rows: pl.DataFrame, config: WarmupParams, max_length: int, truncation: str,
    device: torch.device, precision: str, cache_store: TableStore, checkpoints: CheckpointStore,
    log: Callable[[str], None],
) -> tuple[PublishedCheckpoint, list[float], bool]:
    """The warm student of ``rows`` (:func:`resources.training.warm_start.train_warm_student`) published in
    ``checkpoints``: the checkpoint, the warm-up losses and whether an earlier warm-up with the same inputs was
    reused."""
    inputs = [folder_hash(Path(student_folder)), frame_hash(rows), dataclasses.asdict(config), max_length, truncation,
              device.type, precision]
    cache = WarmStudentCache(cache_store, checkpoints, inputs)
    reused = cache.load()
    if reused:
        published, losses = reused
        log(f"warm student {published.content_hash[:16]} reused: an earlier run trained it from the same inputs "
            f"(warm_student_cache {cache.key})")
        TALLY.add(reused_examples=rows.height)
        return published, losses, True
    with tempfile.TemporaryDirectory() as scratch:
        losses = train_warm_student(student_folder, rows, config, max_length, Path(scratch), device,
                                    resolve_dtype(precision), log, truncation)
        published = checkpoints.publish(Path(scratch), "warm_student")
    cache.save(published, losses)
    return published, losses, False
