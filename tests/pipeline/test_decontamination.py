"""Decontamination on the tiny pipeline: a generated candidate planted in the held-out set and a baseline row
planted in the reference set are dropped (named with their match) under drop, stop the run under block and are
kept, marked, under warn; the Self-Instruct baseline is filtered by the same rule as the candidates."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from dagster_project.cli import main
from resources.synthesis.text_filters import rouge_tokens
from tests.helpers import run_json, write_profile

SYNTHESIS = ("key:seed_prompts or key:reference_set or key:heldout_set or key:synthetic_instructions "
             "or key:baseline_dataset")


def planted(source: str, rows: pl.DataFrame, item: str, target: Path) -> Path:
    """The data file ``source`` with the first row of ``rows`` appended as item ``item``, written to ``target``."""
    table = pl.read_ndjson(source)
    copy = rows.filter(pl.col("instruction").map_elements(lambda t: len(rouge_tokens(t)) >= 3,
                                                          return_dtype=pl.Boolean)).head(1)
    pl.concat([table, copy.select(id=pl.lit(item), instruction="instruction", response="response")]).write_ndjson(
        target)
    return target


def profile_with(base: Path, action: str, reference: Path, heldout: Path) -> Path:
    raw = yaml.safe_load(base.read_text())
    raw["decontamination"] = {"action": action}
    raw.setdefault("data", {}).update(reference_set=str(reference), heldout_set=str(heldout))
    path = base.with_name(f"profile-{action}.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def contaminated(tmp_path: Path, model_cache: Path, dagster_home: Path, capsys) -> tuple[Path, dict]:  # noqa: ANN001
    """A first run on the shipped data (nothing matches), then one candidate planted in the held-out set and one
    baseline row in the reference set: the base profile and the planted files."""
    base = write_profile(tmp_path, model_cache)
    clean = run_json(capsys, "run", "--profile", str(base), "--select", SYNTHESIS, "--json")["assets"]
    candidates = pl.read_parquet(clean["synthetic_instructions"]["path"])
    assert not candidates["contaminated"].any()
    kept = candidates.filter(pl.col("kept"))
    baseline = pl.read_parquet(clean["baseline_dataset"]["path"])
    heldout = planted("data/heldout_set.jsonl", kept, "planted-candidate", tmp_path / "heldout.jsonl")
    reference = planted("data/reference_set.jsonl", baseline, "planted-baseline", tmp_path / "reference.jsonl")
    return base, {"reference": reference, "heldout": heldout, "candidates": kept.height, "baseline": baseline.height}


def test_drop(contaminated: tuple[Path, dict], capsys) -> None:  # noqa: ANN001
    base, files = contaminated
    profile = profile_with(base, "drop", files["reference"], files["heldout"])
    assets = run_json(capsys, "run", "--profile", str(profile), "--select", SYNTHESIS, "--json")["assets"]
    candidates = pl.read_parquet(assets["synthetic_instructions"]["path"])
    dropped = candidates.filter(pl.col("verdict") == "contaminated")
    assert dropped.height >= 1 and not dropped["kept"].any()
    planted_row = dropped.filter(pl.col("contamination_item") == "planted-candidate")
    assert planted_row.height >= 1 and planted_row["contamination_set"].to_list()[0] == "heldout_set"
    assert planted_row["contamination_evidence"][0]  # the shared words or the ROUGE-L score
    assert candidates.filter(pl.col("kept")).height == files["candidates"] - dropped.height

    baseline = pl.read_parquet(assets["baseline_dataset"]["path"])  # the same rule removed the baseline's copy
    assert baseline.height < files["baseline"] and not baseline["contaminated"].any()
    instance = DagsterInstance.get()
    metadata = instance.get_latest_materialization_event(AssetKey("baseline_dataset")).asset_materialization.metadata
    counts = metadata["decontamination"].value
    assert counts["action"] == "drop" and counts["by_set"]["reference_set"] >= 1 and counts["seconds"] >= 0
    assert metadata["verdicts"].value["contaminated"] == files["baseline"] - baseline.height


def test_block_stops_the_run_naming_the_rows(contaminated: tuple[Path, dict], capsys) -> None:  # noqa: ANN001
    base, files = contaminated
    profile = profile_with(base, "block", files["reference"], files["heldout"])
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--select", SYNTHESIS, "--json"]) == 1
    check = DagsterInstance.get().event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey("synthetic_instructions"), "not_contaminated")])
    evaluation = next(iter(check.values())).evaluation
    assert not evaluation.passed and "heldout_set item planted-candidate" in evaluation.description
    capsys.readouterr()
    assert main(["status", "--profile", str(profile), "--json"]) == 0
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status["synthetic_instructions"]["status"] == "fresh"  # written, marked, and blocked downstream


def test_warn_keeps_the_rows_marked(contaminated: tuple[Path, dict], capsys) -> None:  # noqa: ANN001
    base, files = contaminated
    profile = profile_with(base, "warn", files["reference"], files["heldout"])
    assets = run_json(capsys, "run", "--profile", str(profile), "--select", SYNTHESIS, "--json")["assets"]
    candidates = pl.read_parquet(assets["synthetic_instructions"]["path"])
    assert candidates.filter(pl.col("kept")).height == files["candidates"]
    marked = candidates.filter(pl.col("contaminated"))
    assert "planted-candidate" in marked["contamination_item"].to_list() and marked["kept"].all()
    baseline = pl.read_parquet(assets["baseline_dataset"]["path"])
    assert baseline.height == files["baseline"] and "planted-baseline" in baseline["contamination_item"].to_list()
