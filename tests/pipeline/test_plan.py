"""``montessori plan`` on the tiny profile: samples with their filter verdicts, a projection for every stage of the
graph, and nothing written to the tables or the Dagster instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance

from dagster_project.cli import main
from dagster_project.definitions import build_definitions


def test_plan_previews_and_projects_without_writing(
    profile_path: Path, tmp_path: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    capsys.readouterr()
    assert main(["plan", "--profile", str(profile_path), "--samples", "2", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])

    assert len(report["samples"]) == 2 * 4  # 2 prompts x samples_per_prompt
    for sample in report["samples"]:  # each printed with its verdict
        assert sample["verdict"] in out
        assert any(sample["prompt_id"] in line and sample["verdict"] in line for line in out.splitlines())
    assert "verdicts: " in out

    graph = build_definitions(str(profile_path)).resolve_asset_graph()
    assets = {key.to_user_string() for key in graph.materializable_asset_keys}
    assert set(report["stages"]) == assets
    for name in ("synthetic_instructions", "influence_scores", "teacher_checkpoint", "student_evaluation"):
        assert report["stages"][name]["wall_seconds"] > 0, name
    assert report["stages"]["synthetic_instructions"]["tokens_out"] > 0
    assert report["stages"]["teacher_checkpoint"]["tokens_trained"] > 0
    assert report["total_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in report["stages"].values()), abs=0.1)
    assert any(line.startswith("total") for line in out.splitlines())
    stages = report["stages"]
    extra = sum(stages[name]["wall_seconds"] for name in (
        "synthetic_instructions", "warm_student", "influence_scores", "preference_pairs", "teacher_checkpoint"))
    ratio = extra / stages["baseline_dataset"]["wall_seconds"]
    assert f"Projected Montessori overhead over Self-Instruct: {ratio:.1f}x" in out
    assert report["assumptions"] and "assumptions:" in out

    assert not (tmp_path / "tables").exists() and not (tmp_path / "checkpoints").exists()
    assert DagsterInstance.get().get_runs() == []


def test_plan_rejects_a_bad_profile(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthesis:\n  num_promts: 3\n")
    assert main(["plan", "--profile", str(bad)]) == 2
    assert "synthesis.num_promts" in capsys.readouterr().err
