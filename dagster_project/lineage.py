"""Answers from the Dagster instance: what is stale, and where a dataset came from."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions, EventLogRecord
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from resources.storage import TableStore

INPUT_POINTER = "dagster/input_event_pointer/"
AUDIT_METADATA = (
    "teacher_version", "student_version", "rows", "path", "beta", "learning_rate", "method", "positive_share",
    "kept", "source",
)


def asset_status(defs: Definitions, instance: DagsterInstance) -> dict[str, dict[str, str]]:
    """Every asset's status (fresh / stale / missing) and why, in graph order.

    Dagster marks only the asset whose code or input data changed; a descendant of a stale or
    missing asset is reported stale too, naming that ancestor, since it will change when rerun."""
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance, graph, loading_context=view)
    report: dict[str, dict[str, str]] = {}
    for key in graph.toposorted_asset_keys:
        name = key.to_user_string()
        status = resolver.get_status(key)
        if status == StaleStatus.MISSING:
            report[name] = {"status": "missing", "reason": "never materialized"}
        elif status == StaleStatus.STALE:
            causes = resolver.get_stale_root_causes(key)
            reason = "; ".join(f"{c.category.name.lower()}: {c.reason} ({c.asset_key.to_user_string()})"
                               for c in causes)
            report[name] = {"status": "stale", "reason": reason}
        else:
            report[name] = {"status": "fresh", "reason": ""}
        stale_parents = [p.to_user_string() for p in graph.get(key).parent_keys
                         if report.get(p.to_user_string(), {}).get("status") in ("stale", "missing")]
        if report[name]["status"] == "fresh" and stale_parents:
            report[name] = {"status": "stale", "reason": f"dependency: upstream {', '.join(stale_parents)} out of date"}
    return report


def _record_summary(record: EventLogRecord) -> dict[str, Any]:
    materialization = record.asset_materialization
    tags = materialization.tags or {}
    metadata = {k: v.value for k, v in materialization.metadata.items() if k in AUDIT_METADATA}
    return {
        "asset": materialization.asset_key.to_user_string(),
        "run_id": record.run_id,
        "timestamp": record.timestamp,
        "data_version": tags.get("dagster/data_version"),
        "code_version": tags.get("dagster/code_version"),
        "metadata": metadata,
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


def file_stamp(path: str) -> dict[str, str]:
    """What a copied dataset file says about itself (run id, asset, teacher_version); Parquet's own
    entries (the Arrow schema) are left out."""
    return {k: v for k, v in TableStore.read_metadata(path).items() if not k.startswith("ARROW:")}
