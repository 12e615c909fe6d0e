"""Answers from the Dagster instance: where a dataset came from (public event-log APIs only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, EventLogRecord
from upath import UPath

from resources.storage.tables import TableStore

REVIEW_METADATA = ("review", "reviewer", "pairs_kept", "pairs_dropped", "pairs_swapped")  # the teacher's

INPUT_POINTER = "dagster/input_event_pointer/"
INPUT_VERSION = "dagster/input_data_version/"
AUDIT_METADATA = (
    "teacher_version", "student_version", "rows", "path", "beta", "learning_rate", "method", "positive_share",
    "kept", "source", *REVIEW_METADATA, "review_file", "decontamination",
)


def _record_summary(record: EventLogRecord) -> dict[str, Any]:
    materialization = record.asset_materialization
    tags = materialization.tags or {}
    metadata = {k: v.value for k, v in materialization.metadata.items() if k in AUDIT_METADATA}
    if "path" in metadata and not UPath(str(metadata["path"])).exists():
        metadata["pruned"] = "the table file is gone (pruned or deleted); the record stays"
    return {
        "asset": materialization.asset_key.to_user_string(),
        "run_id": record.run_id,
        "timestamp": record.timestamp,
        "data_version": tags.get("dagster/data_version"),
        "code_version": tags.get("dagster/code_version"),
        "metadata": metadata,
        "input_data_versions": {tag[len(INPUT_VERSION):]: value for tag, value in sorted(tags.items())
                                if tag.startswith(INPUT_VERSION)},
    }


def lineage(instance: DagsterInstance, record: EventLogRecord) -> dict[str, Any]:
    """The materialization ``record`` and, recursively, the exact upstream materializations it read."""
    node = _record_summary(record)
    node["inputs"] = []
    for tag, pointer in sorted((record.asset_materialization.tags or {}).items()):
        if tag.startswith(INPUT_POINTER):
            upstream = AssetKey.from_user_string(tag[len(INPUT_POINTER):])
            found = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=upstream, storage_ids=[int(pointer)]), limit=1
            ).records
            if found:
                node["inputs"].append(lineage(instance, found[0]))
    return node


def find_materialization(instance: DagsterInstance, target: str) -> EventLogRecord:
    """The materialization named by an asset name (latest) or by a table path (the run stamped in the file)."""
    if target.endswith(".parquet"):
        by_path = _by_recorded_path(instance, target)
        if by_path is not None:
            return by_path
        stamp = TableStore.read_metadata(target)
        key, run_id = AssetKey.from_user_string(stamp["asset_key"]), stamp["dagster_run_id"]
        records = instance.fetch_materializations(key, limit=1000).records
        matches = [r for r in records if r.run_id == run_id]
        if not matches:
            raise LookupError(f"{target}: run {run_id} of {key.to_user_string()} is not in this Dagster instance")
        return matches[0]
    record = instance.fetch_materializations(AssetKey.from_user_string(target), limit=1).records
    if not record:
        raise LookupError(f"asset {target!r} has no materialization in this Dagster instance")
    return record[0]


def _by_recorded_path(instance: DagsterInstance, target: str) -> EventLogRecord | None:
    """The earliest materialization that recorded ``target`` as its table (the one that wrote it), if any."""
    try:
        stamp = TableStore.read_metadata(target)
    except FileNotFoundError:
        return None
    if "asset_key" not in stamp:
        return None
    wanted = target if "://" in target else str(Path(target).resolve())
    records = instance.fetch_materializations(AssetKey.from_user_string(stamp["asset_key"]), limit=1000).records
    recorded = [record for record in records if _recorded(record) == wanted]
    return recorded[-1] if recorded else None  # records come newest first


def _recorded(record: EventLogRecord) -> str:
    value = record.asset_materialization.metadata.get("path")
    return str(value.value) if value is not None else ""


def versions(instance: DagsterInstance, asset: str, limit: int = 100) -> list[dict[str, Any]]:
    """Every materialization of ``asset``, newest first: time, run, data version, path (and whether it still
    exists), rows and teacher_version where it applies."""
    records = instance.fetch_materializations(AssetKey.from_user_string(asset), limit=limit).records
    rows = []
    for record in records:
        summary = _record_summary(record)
        metadata = record.asset_materialization.metadata
        rows.append({
            "timestamp": summary["timestamp"], "run_id": summary["run_id"], "data_version": summary["data_version"],
            "path": _recorded(record), "exists": bool(_recorded(record)) and UPath(_recorded(record)).exists(),
            "rows": metadata["dagster/row_count"].value if "dagster/row_count" in metadata else None,
            "teacher_version": metadata["teacher_version"].value if "teacher_version" in metadata else None,
        })
    return rows


def protected_paths(instance: DagsterInstance, assets: list[str]) -> set[str]:
    """The table paths the latest materialization of each asset wrote or read (its inputs' recorded paths): what
    pruning must never delete."""
    protected = set()
    for asset in assets:
        records = instance.fetch_materializations(AssetKey.from_user_string(asset), limit=1).records
        if not records:
            continue
        tree = [lineage(instance, records[0])]
        while tree:
            node = tree.pop()
            if node["metadata"].get("path"):
                protected.add(str(node["metadata"]["path"]))
            tree += node["inputs"]
    return protected


def export_provenance(
    instance: DagsterInstance, record: EventLogRecord, summary: dict[str, Any], settings: Any
) -> dict[str, Any]:
    """What an exported dataset's card says about its origin: teacher, base models, the run's resolved settings,
    run id, upstream data versions and the latest Montessori vs Self-Instruct verdict."""
    metadata = record.asset_materialization.metadata
    settings_path = str(metadata["settings"].value) if "settings" in metadata else None
    settings_text = UPath(settings_path).read_text() if settings_path and UPath(settings_path).exists() else ""
    evaluation = instance.fetch_materializations(AssetKey("student_evaluation"), limit=1).records
    verdict = evaluation[0].asset_materialization.metadata.get("comparison") if evaluation else None
    provenance = {
        "teacher_version": str(metadata["teacher_version"].value) if "teacher_version" in metadata else "",
        "review": _reviews(summary),
        "decontamination": {**settings.decontamination.model_dump(mode="json"),
                            **(metadata["decontamination"].value if "decontamination" in metadata else {})},
        "base_models": {"teacher": settings.models.teacher, "student": settings.models.student},
        "settings_yaml": settings_text or settings.resolved_yaml(),
        "run_id": record.run_id,
        "upstream_data_versions": summary["input_data_versions"],
        "verdict": str(verdict.value) if verdict is not None else "no evaluation materialized yet",
    }
    if settings_path:
        provenance["settings_path"] = settings_path
    return provenance


def first_runs(path: str) -> dict[str, int]:
    """How many rows of the table at ``path`` each run first wrote (its ``source_run`` column, kept across reruns
    that write the same rows); empty for a table without one."""
    table = TableStore.read(path)
    if "source_run" not in table.columns:
        return {}
    return dict(table["source_run"].value_counts(sort=True).iter_rows())


def _reviews(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The review recorded by every teacher checkpoint in a lineage tree, by asset (``review: off`` when the pairs
    were not reviewed); empty when the tree has no teacher (the baseline)."""
    found, nodes = {}, [tree]
    while nodes:
        node = nodes.pop()
        if node["asset"].endswith("teacher_checkpoint") and "review" in node["metadata"]:
            found[node["asset"]] = {key: node["metadata"][key] for key in REVIEW_METADATA if key in node["metadata"]}
        nodes += node["inputs"]
    return dict(sorted(found.items()))


def file_stamp(path: str) -> dict[str, str]:
    """What a copied dataset file says about itself (run id, asset, teacher_version, content hash); Parquet's own
    entries (the Arrow schema) are left out."""
    return {k: v for k, v in TableStore.read_metadata(path).items() if not k.startswith("ARROW:")}
