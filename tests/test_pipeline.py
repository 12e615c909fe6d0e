"""The whole graph materialized for real with tiny models in a temporary DAGSTER_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from dagster import AssetKey, DagsterInstance

from dagster_project.cli import main
from resources.storage import TableStore

ALL_ASSETS = [
    "seed_prompts", "reference_set", "heldout_set", "synthetic_instructions", "warm_student",
    "influence_scores", "preference_pairs", "teacher_checkpoint", "student_dataset",
]


def test_cli_materializes_every_asset(profile_path: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    assert main(["run", "--profile", str(profile_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(summary["assets"]) == sorted(ALL_ASSETS)
    for name, row in summary["assets"].items():
        assert Path(row["path"]).is_file(), name
        assert row["rows"] > 0 and row["seconds"] >= 0

    instance = DagsterInstance.get()
    teacher_event = instance.get_latest_materialization_event(AssetKey("teacher_checkpoint"))
    teacher_version = teacher_event.asset_materialization.metadata["teacher_version"].value
    dataset_path = summary["assets"]["student_dataset"]["path"]
    dataset = pl.read_parquet(dataset_path)
    assert dataset["teacher_version"].unique().to_list() == [teacher_version]
    assert dataset["source_run"].unique().to_list() == [summary["run_id"]]
    assert TableStore.read_metadata(dataset_path)["teacher_version"] == teacher_version

    synthetic = pl.read_parquet(summary["assets"]["synthetic_instructions"]["path"])
    assert {"prompt_id", "teacher_prompt", "raw_output", "verdict", "kept"} <= set(synthetic.columns)
    scores = pl.read_parquet(summary["assets"]["influence_scores"]["path"])
    assert (scores["influence"] - (scores["loss_before"] - scores["loss_after"])).abs().max() < 1e-9
    pairs = pl.read_parquet(summary["assets"]["preference_pairs"]["path"])
    assert (pairs["margin"] > 0).all()


def test_select_reruns_only_downstream(profile_path: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    assert main(["run", "--profile", str(profile_path)]) == 0
    capsys.readouterr()
    assert main(["run", "--profile", str(profile_path), "--select", "preference_pairs*", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(summary["assets"]) == ["preference_pairs", "student_dataset", "teacher_checkpoint"]


def test_bad_profile_names_the_key(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text("dpo:\n  betta: 0.2\n")
    assert main(["run", "--profile", str(bad)]) == 2
    assert "dpo.betta" in capsys.readouterr().err
