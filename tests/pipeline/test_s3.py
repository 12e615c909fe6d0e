"""The whole tiny pipeline with every table and checkpoint on S3: a real S3 API server (moto) on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from dagster_project.cli import main
from tests.helpers import write_profile


def test_pipeline_on_s3(tmp_path: Path, model_cache: Path, dagster_home: Path, s3_server, capsys) -> None:  # noqa: ANN001
    profile = write_profile(tmp_path, model_cache)
    raw = yaml.safe_load(profile.read_text())
    raw["storage"] = {"tables": "s3://montessori/tables", "checkpoints": "s3://montessori/checkpoints"}
    profile.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["run", "--profile", str(profile), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dataset = summary["assets"]["student_dataset"]["path"]
    assert dataset.startswith("s3://montessori/tables/profile/student_dataset/") and dataset.endswith(".parquet")
    keys = {o["Key"] for o in s3_server.list_objects_v2(Bucket="montessori")["Contents"]}
    assert dataset.removeprefix("s3://montessori/") in keys
    assert any(k.startswith("checkpoints/teacher/") and k.endswith("_MANIFEST.json") for k in keys)

    code = ("import polars as pl, sys; from resources.storage.tables import TableStore; "
            "t = TableStore.read(sys.argv[1]); print(t.height, t['teacher_version'][0])")
    fresh = subprocess.run([sys.executable, "-c", code, dataset], capture_output=True, text=True, check=True)
    rows, teacher_version = fresh.stdout.split()
    assert int(rows) == summary["assets"]["student_dataset"]["rows"]

    capsys.readouterr()
    assert main(["audit", dataset, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["file"]["teacher_version"] == teacher_version
    teacher = next(n for n in report["lineage"]["inputs"] if n["asset"] == "teacher_checkpoint")
    assert teacher["metadata"]["teacher_version"] == teacher_version
