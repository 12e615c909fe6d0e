"""Versioned tables, settings kept per content hash, and pruning: real files, locally and on S3 (moto)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import polars as pl
import pytest
from upath import UPath

from resources.storage.prune import delete_versions, plan_prune
from resources.storage.tables import CheckpointStore, TableStore, content_version, publish_new_bytes
from tests.reliability.test_faults import FaultyFileSystem, faulty_store  # noqa: F401 - a fixture

FIRST = pl.DataFrame({"instruction": ["a", "b"], "response": ["x", "y"]})
SECOND = pl.DataFrame({"instruction": ["c"], "response": ["z"]})


@pytest.fixture(params=["local", "s3"])
def tables_base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A table base folder on disk, or on a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "tables")
    from s3fs import S3FileSystem

    request.getfixturevalue("s3_server")
    S3FileSystem.clear_instance_cache()  # a cached filesystem would still talk to an earlier test's server
    return "s3://montessori/tables"


def stored_files(folder: UPath) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_every_version_is_its_own_file_and_nothing_is_overwritten(tables_base: str) -> None:
    store = TableStore(tables_base)
    first = store.write_version(FIRST, "exp-a", ["student_dataset"], "v1", {"dagster_run_id": "run-1"})
    assert first.status == "written"
    assert str(first.path) == f"{tables_base}/exp-a/student_dataset/v1.parquet"
    assert TableStore.read(first.path).equals(FIRST)

    again = store.write_version(FIRST, "exp-a", ["student_dataset"], "v1", {"dagster_run_id": "run-2"})
    assert again.status == "unchanged" and str(again.path) == str(first.path)
    assert TableStore.read_metadata(first.path)["dagster_run_id"] == "run-1"  # the stored file was not rewritten

    second = store.write_version(SECOND, "exp-a", ["student_dataset"], "v2")
    clash = store.write_version(SECOND, "exp-a", ["student_dataset"], "v1")
    assert second.status == "written" and clash.status == "kept_existing"
    assert TableStore.read(first.path).equals(FIRST)
    assert stored_files(store.asset_folder("exp-a", ["student_dataset"])) == ["v1.parquet", "v2.parquet"]
    assert [v.data_version for v in store.versions("exp-a", ["student_dataset"])] == ["v1", "v2"]

    other = store.write_version(SECOND, "exp-b", ["student_dataset"], "v2")
    assert other.status == "written" and str(other.path) != str(second.path)
    assert len(store.versions("exp-a", ["student_dataset"])) == 2
    assert store.versions("exp-a", ["never_materialized"]) == []


@pytest.mark.parametrize("bad", ["", "..", ".hidden", "a/b"])
def test_unsafe_path_segments_are_refused(tmp_path: Path, bad: str) -> None:
    store = TableStore(str(tmp_path))
    with pytest.raises(ValueError, match="path segment"):
        store.version_location("exp", ["asset", bad], "v1")
    with pytest.raises(ValueError, match="path segment"):
        store.version_location(bad, ["asset"], "v1")


def test_concurrent_writers_of_one_path_never_replace_each_other(tmp_path: Path) -> None:
    target = tmp_path / "asset" / "v1.parquet"
    results: dict[int, bool] = {}
    barrier = threading.Barrier(8)

    def write(index: int) -> None:
        barrier.wait()
        results[index] = publish_new_bytes(target, f"writer {index}".encode())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [index for index, written in results.items() if written]
    assert len(winners) == 1
    assert target.read_text() == f"writer {winners[0]}"
    assert [p.name for p in target.parent.iterdir()] == ["v1.parquet"]  # no temporary files left


def test_settings_are_stored_once_per_content(tables_base: str) -> None:
    store = TableStore(tables_base)
    text = "dpo:\n  beta: 0.1\n"
    path = store.store_settings("exp-a", text)
    assert str(path) == f"{tables_base}/exp-a/_settings/{content_version(text)}.yaml"
    assert store.store_settings("exp-a", text) == path
    changed = store.store_settings("exp-a", "dpo:\n  beta: 0.2\n")
    assert changed != path
    assert path.read_text() == text
    assert stored_files(path.parent) == sorted([path.name, changed.name])


def test_prune_keeps_newest_and_protected_and_plans_before_deleting(tmp_path: Path) -> None:
    store = TableStore(str(tmp_path))
    for index in range(4):
        frame = pl.DataFrame({"row": list(range(index + 1))})
        os.utime(store.write_version(frame, "exp", ["pairs"], f"v{index}").path.path, (1000 + index, 1000 + index))
    store.write_version(FIRST, "exp", ["dataset"], "only")
    versions = {name: store.versions("exp", [name]) for name in ("pairs", "dataset")}
    oldest = versions["pairs"][0]
    assert [v.data_version for v in versions["pairs"]] == ["v0", "v1", "v2", "v3"]

    plan = plan_prune(versions, keep=2, protected={oldest.path})
    assert [v.data_version for v in plan.deletions] == ["v1"]
    assert {v.data_version for v in plan.keep["pairs"]} == {"v0", "v2", "v3"}
    assert [v.data_version for v in plan.keep["dataset"]] == ["only"]
    assert plan.freed_bytes == versions["pairs"][1].size > 0
    assert len(store.versions("exp", ["pairs"])) == 4  # planning deleted nothing

    assert delete_versions(plan) == [versions["pairs"][1].path]
    assert [v.data_version for v in store.versions("exp", ["pairs"])] == ["v0", "v2", "v3"]
    with pytest.raises(ValueError):
        plan_prune(versions, keep=-1)


def test_prune_removes_table_files_and_whole_checkpoints(tables_base: str, tmp_path: Path) -> None:
    store = TableStore(tables_base)
    kept_table = store.write_version(FIRST, "exp", ["pairs"], "v1").path
    store.write_version(SECOND, "exp", ["pairs"], "v2")
    table_plan = plan_prune({"pairs": store.versions("exp", ["pairs"])}, keep=0, protected={str(kept_table)})
    assert [UPath(p).name for p in delete_versions(table_plan)] == ["v2.parquet"]
    assert stored_files(store.asset_folder("exp", ["pairs"])) == ["v1.parquet"]

    checkpoints = CheckpointStore(tables_base.replace("tables", "checkpoints"), str(tmp_path / "cache"))
    published = []
    for index in range(3):
        folder = tmp_path / f"model{index}"
        (folder / "sub").mkdir(parents=True)
        (folder / "weights.bin").write_bytes(bytes([index]) * 100)
        (folder / "sub" / "config.json").write_text(f'{{"n": {index}}}')
        published.append(checkpoints.publish(folder, "teacher"))
    versions = checkpoints.versions("teacher")
    assert sorted(v.path for v in versions) == sorted(p.uri for p in published)
    assert all(v.size >= 100 for v in versions)

    keep = published[1].uri
    plan = plan_prune({"teacher": versions}, keep=0, protected={keep})
    assert sorted(delete_versions(plan)) == sorted(p.uri for p in published if p.uri != keep)
    assert [v.path for v in checkpoints.versions("teacher")] == [keep]
    for gone in (p.uri for p in published if p.uri != keep):
        assert not UPath(gone).exists() or not list(UPath(gone).rglob("*"))
        with pytest.raises(FileNotFoundError):
            checkpoints.local_folder(gone)
    assert Path(checkpoints.local_folder(keep), "weights.bin").read_bytes() == bytes([1]) * 100


def test_transient_faults_on_a_versioned_write_are_retried(faulty_store: TableStore) -> None:  # noqa: F811
    FaultyFileSystem.write_faults = [ConnectionResetError("reset (injected)"), TimeoutError("slow (injected)")]
    result = faulty_store.write_version(FIRST, "exp", ["pairs"], "v1")
    assert result.status == "written" and FaultyFileSystem.write_opens == 3
    assert TableStore.read(result.path).equals(FIRST)
    assert faulty_store.write_version(FIRST, "exp", ["pairs"], "v1").status == "unchanged"
