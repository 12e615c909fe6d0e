"""The Dagster instance on a real PostgreSQL server (deploy/dagster.yaml): runs, staleness and audit."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from dagster_project.cli import main
from tests.helpers import write_profile

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(*command: str) -> None:
    """Run a server command as the postgres system user when we are root (PostgreSQL refuses root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *command], check=True, capture_output=True)


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert binaries, "PostgreSQL is not installed: run scripts/ensure_postgres.sh (make test does)"
    bin_dir = Path(binaries[-1])
    data = Path(tempfile.mkdtemp(prefix="montessori-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "dagster")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "start",
                "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1")
    try:
        as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster")
        monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://dagster@127.0.0.1:{port}/dagster")
        yield port
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_pipeline_on_postgres_instance(
    tmp_path: Path, model_cache: Path, dagster_home: Path, postgres: int, capsys  # noqa: ANN001
) -> None:
    shutil.copy(ROOT / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    profile = write_profile(tmp_path, model_cache)
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert instance.get_run_by_id(summary["run_id"]).is_success

    assert main(["status", "--profile", str(profile), "--json"]) == 0
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {row["status"] for row in status.values()} == {"fresh"}
    assert main(["audit", summary["assets"]["student_dataset"]["path"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["lineage"]["run_id"] == summary["run_id"]
