"""The review gate on the tiny pipeline: with pairs.review required the run stops before DPO, `montessori review
export` writes the sheet, a sheet with one drop and one swap lets the run finish, the teacher trains on what the
review kept and differs from the unreviewed teacher, audit names the review, and an edited sheet makes it stale."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml
from dagster import AssetKey, DagsterInstance

from assets.output import recorded_path
from dagster_project.cli import main
from resources.preference.review import dpo_pairs, sheet_version
from tests.helpers import run_json, write_profile

UP_TO_DATASET = "*student_dataset"


def failed_run(capsys, *args: str) -> str:  # noqa: ANN001 - pytest's capsys
    """Run the CLI, expect it to fail, return what it printed to stderr."""
    capsys.readouterr()
    assert main(list(args)) == 1
    return capsys.readouterr().err


def with_sheet(profile: Path, sheet: Path | None, review: str = "required") -> Path:
    raw = yaml.safe_load(profile.read_text())
    raw["pairs"]["review"] = review
    raw.setdefault("data", {})["pair_review"] = None if sheet is None else str(sheet)
    path = profile.with_name(f"profile-{review}-{sheet.stem if sheet else 'none'}.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


def test_review_gate_round_trip(tmp_path: Path, model_cache: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    profile = with_sheet(write_profile(tmp_path, model_cache), None)
    err = failed_run(capsys, "run", "--profile", str(profile), "--select", UP_TO_DATASET)
    assert "  reviewed_pairs: ValueError: pairs.review is required and no review sheet is set (data.pair_review)" in err
    assert f"montessori review export --profile {profile} --to review.csv" in err
    status = run_json(capsys, "status", "--profile", str(profile), "--json")
    assert status["preference_pairs"]["status"] == "fresh"  # the run stopped right before DPO
    assert status["teacher_checkpoint"]["status"] == "missing" and status["reviewed_pairs"]["status"] == "missing"

    sheet = tmp_path / "review.csv"
    capsys.readouterr()
    assert main(["review", "export", "--profile", str(profile), "--to", str(sheet), "--reviewer", "ada"]) == 0
    assert "fill in decision" in capsys.readouterr().out
    exported = pl.read_csv(sheet, infer_schema=False)
    pairs = pl.read_parquet(recorded_path(DagsterInstance.get(), AssetKey("preference_pairs")))
    assert exported.height == pairs.height >= 3
    assert {"pair_id", "prompt", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "decision",
            "note", "reviewer"} <= set(exported.columns)
    assert exported["decision"].fill_null("").to_list() == [""] * exported.height

    # an unknown word fails before DPO, naming the file, the row and what to run
    exported.with_columns(decision=pl.Series(["maybe"] + ["keep"] * (exported.height - 1))).write_csv(sheet)
    reviewed_profile = with_sheet(profile, sheet)
    err = failed_run(capsys, "run", "--profile", str(reviewed_profile), "--select", UP_TO_DATASET)
    assert f"review sheet {sheet} does not cover round 1's current pairs" in err
    assert f"unknown decision (use keep, drop, swap): rows 1 ({exported['pair_id'][0]})" in err
    assert f"`montessori review export --profile {reviewed_profile} --to {sheet}`" in err

    decisions = ["drop", "swap"] + ["keep"] * (exported.height - 2)
    exported.with_columns(decision=pl.Series(decisions), note=pl.lit("checked")).write_csv(sheet)
    summary = run_json(capsys, "run", "--profile", str(reviewed_profile), "--select", UP_TO_DATASET, "--json")
    assert {"reviewed_pairs", "teacher_checkpoint", "student_dataset"} <= set(summary["assets"])
    reviewed = pl.read_parquet(summary["assets"]["reviewed_pairs"]["path"])
    assert reviewed["decision"].to_list() == decisions
    trained = dpo_pairs(reviewed)
    assert exported["pair_id"][0] not in trained["pair_id"].to_list()  # the dropped pair is not trained on
    swapped = reviewed.filter(pl.col("pair_id") == exported["pair_id"][1]).row(0, named=True)
    assert (swapped["chosen"], swapped["rejected"]) == (exported["rejected"][1], exported["chosen"][1])
    manifest = pl.read_parquet(summary["assets"]["teacher_checkpoint"]["path"]).row(0, named=True)
    assert manifest["pairs"] == pairs.height - 1
    assert (manifest["review"], manifest["reviewer"]) == (sheet_version(str(sheet)), "ada")
    assert (manifest["pairs_kept"], manifest["pairs_dropped"], manifest["pairs_swapped"]) == (pairs.height - 2, 1, 1)

    audit = run_json(capsys, "audit", "student_dataset", "--json")["lineage"]
    teacher = next(node for node in audit["inputs"] if node["asset"] == "teacher_checkpoint")
    assert teacher["metadata"]["review"] == sheet_version(str(sheet)) and teacher["metadata"]["reviewer"] == "ada"
    assert teacher["metadata"]["pairs_dropped"] == 1 and teacher["metadata"]["pairs_swapped"] == 1
    assert teacher["inputs"][0]["asset"] == "reviewed_pairs"
    assert main(["export", "student_dataset", "--profile", str(reviewed_profile), "--to", str(tmp_path / "export"),
                 "--format", "jsonl"]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    assert (f"- teacher_checkpoint: review sheet `{sheet_version(str(sheet))}` by ada: {pairs.height - 2} pairs kept, "
            "1 dropped, 1 swapped") in card
    assert "### Decontamination" in card and "action `drop`:" in card

    sheet.write_text(sheet.read_text().replace("checked", "checked again"))  # an edited review
    status = run_json(capsys, "status", "--profile", str(reviewed_profile), "--json")
    assert status["reviewed_pairs"]["status"] == "stale" and "pair_review" in status["reviewed_pairs"]["reason"]
    assert status["preference_pairs"]["status"] == "fresh"

    unreviewed = with_sheet(profile, None, review="off")  # the same pairs, no review: DPO on every pair
    plain = run_json(capsys, "run", "--profile", str(unreviewed), "--select", "teacher_checkpoint", "--json")
    plain_manifest = pl.read_parquet(plain["assets"]["teacher_checkpoint"]["path"]).row(0, named=True)
    assert plain_manifest["pairs"] == pairs.height and plain_manifest["review"] == "off"
    assert plain_manifest["teacher_version"] != manifest["teacher_version"]


def test_all_drop_never_runs_an_empty_dpo(tmp_path: Path, model_cache: Path, dagster_home: Path, capsys) -> None:  # noqa: ANN001
    profile = with_sheet(write_profile(tmp_path, model_cache), None)
    failed_run(capsys, "run", "--profile", str(profile), "--select", "*teacher_checkpoint")
    sheet = tmp_path / "review.jsonl"
    assert main(["review", "export", "--profile", str(profile), "--to", str(sheet)]) == 0
    pl.read_ndjson(sheet).with_columns(decision=pl.lit("drop")).write_ndjson(sheet)
    err = failed_run(capsys, "run", "--profile", str(with_sheet(profile, sheet)), "--select", "*teacher_checkpoint")
    assert "no pairs left after review" in err
