"""Staleness, --stale-only, audit and blocking checks against a real Dagster instance."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from safetensors.torch import load_file, save_file

from dagster_project.cli import main
from resources.storage.tables import CheckpointStore, PublishedCheckpoint
from tests.helpers import run_json, write_profile

UPSTREAM_OF_TEACHER = [
    "seed_prompts", "reference_set", "heldout_set", "synthetic_instructions", "warm_student",
    "influence_scores", "preference_pairs",
]


def test_dpo_change_makes_exactly_teacher_and_downstream_stale(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    first = write_profile(tmp_path, model_cache)
    first_run = run_json(capsys, "run", "--profile", str(first), "--json")
    status = run_json(capsys, "status", "--profile", str(first), "--json")
    assert {row["status"] for row in status.values()} == {"fresh"}

    changed_dir = tmp_path / "changed"
    changed_dir.mkdir()
    changed = write_profile(changed_dir, model_cache, dpo={"beta": 0.3})
    shutil.copy(changed, tmp_path / "changed.yaml")
    raw = changed.read_text().replace(str(changed_dir), str(tmp_path))  # same storage as the first profile
    changed.write_text(raw)

    status = run_json(capsys, "status", "--profile", str(changed), "--json")
    assert status["teacher_checkpoint"]["status"] == "stale" and "code" in status["teacher_checkpoint"]["reason"]
    assert status["student_dataset"]["status"] == "stale"
    assert all(status[name]["status"] == "fresh" for name in UPSTREAM_OF_TEACHER)
    assert status["baseline_dataset"]["status"] == "fresh"  # beside the teacher, not downstream of it

    rerun = run_json(capsys, "run", "--profile", str(changed), "--stale-only", "--json")
    assert sorted(rerun["assets"]) == [
        "evaluation_report", "student_dataset", "student_evaluation", "teacher_checkpoint",
    ]  # the teacher and exactly its descendants
    status = run_json(capsys, "status", "--profile", str(changed), "--json")
    assert {row["status"] for row in status.values()} == {"fresh"}

    dataset_path = rerun["assets"]["student_dataset"]["path"]
    new_version = pl.read_parquet(rerun["assets"]["teacher_checkpoint"]["path"])["teacher_version"][0]
    old_version = pl.read_parquet(dataset_path)  # the file itself names its teacher
    assert old_version["teacher_version"].unique().to_list() == [new_version]

    copied = tmp_path / "elsewhere.parquet"
    shutil.copy(dataset_path, copied)
    report = run_json(capsys, "audit", str(copied), "--json")
    assert report["file"]["teacher_version"] == new_version
    assert set(report["file"]) == {"asset_key", "dagster_run_id", "teacher_version", "content_hash"}
    tree = report["lineage"]
    teacher = next(n for n in tree["inputs"] if n["asset"] == "teacher_checkpoint")
    assert teacher["metadata"]["teacher_version"] == new_version and teacher["run_id"] == rerun["run_id"]
    pairs = teacher["inputs"][0]
    influence = pairs["inputs"][0]
    assert influence["asset"] == "influence_scores" and influence["run_id"] == first_run["run_id"]
    seeds = {n["asset"] for n in tree["inputs"]}
    assert "seed_prompts" in seeds


def corrupt(weights: Path) -> None:
    """Change one tensor of a stored safetensors file in place."""
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})


def test_failing_blocking_check_stops_downstream(
    profile_path: Path, dagster_home: Path, capsys, monkeypatch  # noqa: ANN001
) -> None:
    publish = CheckpointStore.publish

    def publish_then_corrupt(self: CheckpointStore, folder: Path, name: str) -> PublishedCheckpoint:
        published = publish(self, folder, name)
        if name == "teacher":  # the stored teacher no longer matches its teacher_version
            corrupt(Path(published.uri) / "model.safetensors")
        return published

    monkeypatch.setattr(CheckpointStore, "publish", publish_then_corrupt)
    capsys.readouterr()
    assert main(["run", "--profile", str(profile_path), "--json"]) == 1
    out = capsys.readouterr().out
    table = out.split("asset")[-1]
    assert "teacher_checkpoint" in table
    assert "student_dataset " not in table and "evaluation_report" not in table  # never materialized


def test_rerun_repairs_a_damaged_checkpoint(profile_path: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    summary = run_json(capsys, "run", "--profile", str(profile_path), "--json")
    teacher = pl.read_parquet(summary["assets"]["teacher_checkpoint"]["path"])
    weights = Path(teacher["uri"][0]) / "model.safetensors"
    intact = weights.read_bytes()
    corrupt(weights)
    rerun = run_json(capsys, "run", "--profile", str(profile_path), "--select", "teacher_checkpoint*", "--json")
    assert "student_dataset" in rerun["assets"]  # the blocking check passed again
    assert weights.read_bytes() == intact


def test_identical_rematerialization_keeps_downstream_fresh(
    profile_path: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    run_json(capsys, "run", "--profile", str(profile_path), "--json")
    rerun = run_json(capsys, "run", "--profile", str(profile_path), "--select", "teacher_checkpoint", "--json")
    assert list(rerun["assets"]) == ["teacher_checkpoint"]
    status = run_json(capsys, "status", "--profile", str(profile_path), "--json")
    assert status["student_dataset"]["status"] == "fresh", status["student_dataset"]
