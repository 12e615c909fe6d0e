"""Fixed seeds give identical data versions; credentials never reach logs, metadata or outputs."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from dagster_project.cli import main
from tests.helpers import write_profile

SECRET = "planted-secret-7f3a9c1e5b"
STAGES = ["synthetic_instructions", "warm_student", "influence_scores", "preference_pairs", "teacher_checkpoint"]


def run(capsys, profile: Path) -> dict:  # noqa: ANN001
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--select", "*teacher_checkpoint", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def data_versions(run_id: str) -> dict[str, str]:
    instance = DagsterInstance.get()
    versions = {}
    for stage in STAGES:
        records = instance.fetch_materializations(AssetKey(stage), limit=10).records
        record = next(r for r in records if r.run_id == run_id)
        versions[stage] = record.asset_materialization.tags["dagster/data_version"]
    return versions


def test_two_runs_with_fixed_seeds_have_identical_data_versions(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys  # noqa: ANN001
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = run(capsys, write_profile(tmp_path / "a", model_cache))
    second = run(capsys, write_profile(tmp_path / "b", model_cache))
    assert data_versions(first["run_id"]) == data_versions(second["run_id"])


def test_planted_credentials_never_written(
    tmp_path: Path, model_cache: Path, dagster_home: Path, capsys, monkeypatch  # noqa: ANN001
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + SECRET.upper())
    profile = write_profile(tmp_path, model_cache)
    run(capsys, profile)
    planted = (SECRET.encode(), SECRET.upper().encode())
    files = [p for p in [*tmp_path.rglob("*"), *dagster_home.rglob("*")] if p.is_file()]
    leaks = [str(p) for p in files if any(secret in p.read_bytes() for secret in planted)]
    assert files and not leaks, leaks
