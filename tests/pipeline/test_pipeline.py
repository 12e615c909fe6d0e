"""The whole graph materialized for real with tiny models in a temporary DAGSTER_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from dagster_project.cli import main
from dagster_project.lineage import find_materialization, lineage
from resources.preference.selection import selected_count
from resources.storage.tables import TableStore
from tests.helpers import run_json, write_profile

ALL_ASSETS = [
    "seed_prompts", "reference_set", "heldout_set", "synthetic_instructions", "warm_student",
    "influence_scores", "preference_pairs", "teacher_checkpoint", "student_dataset", "baseline_dataset",
    "student_evaluation", "evaluation_report",
]


def test_cli_materializes_every_asset(profile_path: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    assert main(["run", "--profile", str(profile_path), "--json"]) == 0
    output = capsys.readouterr().out
    summary = json.loads(output.strip().splitlines()[-1])
    assert sorted(summary["assets"]) == sorted(ALL_ASSETS)
    assert "Montessori vs Self-Instruct: held-out loss montessori" in output
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
    upstream = lineage(instance, find_materialization(instance, "student_dataset"))["input_data_versions"]
    assert upstream["teacher_checkpoint"] == teacher_version and set(upstream) >= {"seed_prompts", "warm_student"}

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
    assert sorted(summary["assets"]) == [
        "evaluation_report", "preference_pairs", "student_dataset", "student_evaluation", "teacher_checkpoint",
    ]


def test_bad_profile_names_the_key(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text("dpo:\n  betta: 0.2\n")
    assert main(["run", "--profile", str(bad)]) == 2
    assert "dpo.betta" in capsys.readouterr().err


def test_evaluation_and_report(profile_path: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    assert main(["run", "--profile", str(profile_path), "--json"]) == 0
    out_lines = capsys.readouterr().out.strip().splitlines()
    assets = json.loads(out_lines[-1])["assets"]
    dataset = pl.read_parquet(assets["student_dataset"]["path"])  # test profile: curriculum + sample weights
    assert dataset["influence"].to_list() == sorted(dataset["influence"].to_list(), reverse=True)
    assert abs(dataset["sample_weight"].mean() - 1.0) < 1e-9
    baseline = pl.read_parquet(assets["baseline_dataset"]["path"])
    assert baseline["teacher_version"].unique().to_list() == ["untuned"]

    results = pl.read_parquet(assets["student_evaluation"]["path"])
    trained = results.filter(pl.col("seed").is_not_null())
    assert sorted(trained["dataset"].unique().to_list()) == ["montessori", "self_instruct"]
    assert trained.height == 4 and trained["train_rows"].n_unique() == 1  # 2 seeds x 2 datasets, equal sizes
    assert results.filter(pl.col("dataset") == "untuned").height == 1
    assert results["heldout_loss"].is_finite().all()
    judged = results.filter(pl.col("judge_preference").is_not_null())  # the test profile sets a judge model
    assert judged["dataset"].unique().to_list() == ["montessori"] and judged.height == 2
    assert judged["judge_preference"].is_between(0.0, 1.0).all()

    report = Path(assets["evaluation_report"]["report_path"])  # one report folder per run
    assert report.name == json.loads(out_lines[-1])["run_id"]
    names = {p.name for p in report.iterdir()}
    assert {"report.md", "influence.png", "preference_margins.png", "dpo_curve.png", "heldout_loss.png"} <= names
    for png in report.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), png
    assert "Montessori vs Self-Instruct" in (report / "report.md").read_text()
    check = DagsterInstance.get().event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey("student_dataset"), "diversity_not_collapsed")]
    )
    assert check, "the diversity check ran"


def test_student_dataset_select_keeps_the_rows_its_rule_names(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    """student_dataset.select on a real run: the top-influence half and, rerun, the bottom-influence half of the same
    scored final rows (the generation and the scores come back from the caches)."""
    select = {"order": "generated", "sample_weights": False, "select_share": 0.5}
    top = write_profile(tmp_path, model_cache, student_dataset={**select, "select": "top_influence"})
    summary = run_json(capsys, "run", "--profile", str(top), "--json")
    kept_top = pl.read_parquet(summary["assets"]["student_dataset"]["path"])
    bottom = write_profile(tmp_path, model_cache, student_dataset={**select, "select": "bottom_influence"})
    rerun = run_json(capsys, "run", "--profile", str(bottom), "--select", "student_dataset", "--json")
    kept_bottom = pl.read_parquet(rerun["assets"]["student_dataset"]["path"])

    every = pl.concat([kept_top, kept_bottom]).unique("candidate_id")
    assert kept_top.height == kept_bottom.height == selected_count(every.height, 0.5)
    assert every.height >= 3, "enough final rows to make the test meaningful"
    assert kept_top["influence"].min() >= kept_bottom["influence"].max()
    assert set(kept_top.columns) == set(kept_bottom.columns) and "influence" in kept_top.columns
    baseline = pl.read_parquet(summary["assets"]["baseline_dataset"]["path"])
    assert "influence" not in baseline.columns, "the baseline is never filtered"
