"""Retargeting through the pipeline: with ``influence.method: projected``, a changed reference set re-scores
every candidate from the feature store, and the influence asset's metadata says so."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from dagster import AssetKey, DagsterInstance

from dagster_project.cli import main
from tests.helpers import write_profile


def influence_run(capsys, profile: Path, *flags: str) -> tuple[pl.DataFrame, dict]:  # noqa: ANN001
    """Materialize up to the influence scores; the scores and their materialization metadata."""
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--select", "*influence_scores", *flags, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    event = DagsterInstance.get().get_latest_materialization_event(AssetKey("influence_scores"))
    metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
    return pl.read_parquet(summary["assets"]["influence_scores"]["path"]), metadata


def test_a_new_reference_set_is_scored_from_the_feature_store(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    profile = write_profile(tmp_path, model_cache, influence={"method": "projected", "projection_dim": 8})
    first, metadata = influence_run(capsys, profile)
    assert metadata["scored_from"] == {"computed": first.height} and "scored_from" not in first.columns
    profile.write_text(profile.read_text().replace("influence:", "data:\n  reference_set: data/reference_math.jsonl\n"
                                                                  "influence:", 1))
    retargeted, metadata = influence_run(capsys, profile, "--stale-only")
    assert metadata["scored_from"] == {"feature_store": first.height}, "no candidate was built again"
    assert retargeted["candidate_id"].to_list() == first["candidate_id"].to_list()
    assert retargeted["influence"].to_list() != first["influence"].to_list()
    assert retargeted["candidate_loss"].to_list() == first["candidate_loss"].to_list()
