"""Influence shards run as separate steps (in parallel under the multiprocess executor) and merge
deterministically: the scores equal a single-shard run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from dagster import DagsterInstance

from dagster_project.cli import main
from tests.helpers import write_profile


def run(capsys, profile: Path) -> dict:  # noqa: ANN001
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--select", "*influence_scores", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sharded_multiprocess_scores_equal_single_shard(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "three").mkdir()
    single = run(capsys, write_profile(tmp_path / "one", model_cache, influence={"shards": 1}))
    sharded = run(capsys, write_profile(tmp_path / "three", model_cache, influence={"shards": 3},
                                        runtime={"executor": "multiprocess", "max_concurrent": 3}))
    one = pl.read_parquet(single["assets"]["influence_scores"]["path"])
    three = pl.read_parquet(sharded["assets"]["influence_scores"]["path"])
    assert one.height > 0
    assert one.equals(three)

    stats = DagsterInstance.get().get_run_step_stats(sharded["run_id"])
    shard_steps = [s.step_key for s in stats if "score_influence_shard" in s.step_key]
    assert len(shard_steps) == 3, shard_steps
