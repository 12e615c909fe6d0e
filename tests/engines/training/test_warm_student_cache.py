"""Warm-student reuse on a tiny model: the same inputs reuse the published checkpoint, other inputs or a removed
checkpoint train again, and a reused warm student is the trained one bit for bit."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import polars as pl
import torch
from upath import UPath

from resources.models import resolve_model_source
from resources.storage.tables import CheckpointStore, TableStore
from resources.training.warm_student_cache import warm_student_checkpoint
from tests.helpers import warmup_params

ROWS = pl.DataFrame({"instruction": ["Name a color.", "Say hello.", "What do bees make?"],
                     "response": ["Blue.", "Hello there!", "Honey."]})


def test_a_warm_up_with_the_same_inputs_is_trained_once(model_cache: Path, tmp_path: Path) -> None:
    student = resolve_model_source("tiny-random:warm-cache", model_cache)
    cache, checkpoints = TableStore(str(tmp_path / "cache")), CheckpointStore(str(tmp_path / "ckpt"), str(tmp_path))
    logged: list[str] = []

    def warm(rows: pl.DataFrame = ROWS, learning_rate: float = 1e-3) -> tuple:
        config = dataclasses.replace(warmup_params(learning_rate), seed=3)
        return warm_student_checkpoint(student, rows, config, 64, "left", torch.device("cpu"), "float32", cache,
                                       checkpoints, logged.append)

    first, losses, reused = warm()
    assert not reused and len(losses) > 0
    again, again_losses, reused = warm()
    assert reused and again == first and again_losses == losses
    assert any("reused" in line for line in logged)

    assert not warm(learning_rate=2e-3)[2], "another learning rate is another warm-up"
    assert not warm(rows=ROWS.reverse())[2], "the rows' order is part of the inputs"

    shutil.rmtree(UPath(first.uri).path)
    retrained, retrained_losses, reused = warm()
    assert not reused, "a removed checkpoint is trained again"
    assert retrained.content_hash == first.content_hash and retrained_losses == losses
