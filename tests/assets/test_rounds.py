"""Two rounds for real: round 2 starts from round 1's tuned teacher; audit and staleness see both."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

from dagster_project.cli import main
from tests.helpers import write_profile


def teacher_versions(node: dict) -> list[tuple[str, str]]:
    """(asset, teacher_version) of every teacher checkpoint in an audit tree, nearest first."""
    is_teacher = node["asset"].endswith("teacher_checkpoint")
    found = [(node["asset"], node["metadata"]["teacher_version"])] if is_teacher else []
    return found + [item for child in node["inputs"] for item in teacher_versions(child)]


def test_round_two_builds_on_round_one(tmp_path: Path, model_cache: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    profile = write_profile(tmp_path, model_cache)
    raw = yaml.safe_load(profile.read_text())
    raw["rounds"] = 2
    profile.write_text(yaml.safe_dump(raw))

    assert main(["run", "--profile", str(profile), "--json"]) == 0
    assets = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["assets"]
    assert {"round_2/synthetic_instructions", "round_2/teacher_checkpoint", "teacher_checkpoint"} <= set(assets)
    first = pl.read_parquet(assets["teacher_checkpoint"]["path"])
    second = pl.read_parquet(assets["round_2/teacher_checkpoint"]["path"])
    assert second["base_model"][0].endswith(first["teacher_version"][0])  # round 2 tuned round 1's teacher
    assert second["teacher_version"][0] != first["teacher_version"][0]
    round_one = pl.read_parquet(assets["synthetic_instructions"]["path"])
    round_two = pl.read_parquet(assets["round_2/synthetic_instructions"]["path"])
    assert set(round_one["prompt_id"]).isdisjoint(round_two["prompt_id"])  # new candidates
    dataset_path = assets["student_dataset"]["path"]
    assert pl.read_parquet(dataset_path)["teacher_version"].unique().to_list() == [second["teacher_version"][0]]

    assert main(["audit", dataset_path, "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)["lineage"]
    assert list(dict.fromkeys(teacher_versions(tree))) == [  # round 1's teacher is reached twice
        ("round_2/teacher_checkpoint", second["teacher_version"][0]),
        ("teacher_checkpoint", first["teacher_version"][0]),
    ]

    raw["dpo"]["beta"] = 0.3
    profile.write_text(yaml.safe_dump(raw))
    assert main(["status", "--profile", str(profile), "--json"]) == 0
    status = {name: row["status"] for name, row in json.loads(capsys.readouterr().out).items()}
    assert status["teacher_checkpoint"] == status["round_2/teacher_checkpoint"] == "stale"
    assert status["round_2/synthetic_instructions"] == status["student_dataset"] == "stale"
    assert status["synthetic_instructions"] == status["influence_scores"] == status["baseline_dataset"] == "fresh"
