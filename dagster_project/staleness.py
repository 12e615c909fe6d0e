"""What is stale: the one module that uses Dagster internals.

Dagster has no public API for an asset's stale status and its causes (the UI computes them with the same
resolver). Everything private is imported here, so a Dagster upgrade that moves it fails at import, and
``tests/pipeline/test_staleness_api.py`` fails loudly naming this module.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, Definitions
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

CAUSES = {"code": "code changed", "data": "upstream data changed", "dependencies": "dependency"}


def _observed(instance: DagsterInstance, key: AssetKey) -> dict[str, str]:
    """An observed file: fresh with its latest data version and path, or missing when never observed."""
    records = instance.fetch_observations(key, limit=1).records
    if not records:
        return {"status": "missing", "reason": "never observed"}
    observation = records[0].asset_observation
    path = observation.metadata.get("path")
    where = f" ({path.value})" if path is not None else ""
    version = observation.tags.get("dagster/data_version")
    return {"status": "fresh", "reason": f"observed: data version {version}{where}"}


def asset_status(defs: Definitions, instance: DagsterInstance) -> dict[str, dict[str, str]]:
    """Every asset's status (fresh / stale / missing) and why, in graph order; an observed file is fresh with its
    latest observed data version (missing if never observed).

    Dagster marks only the asset whose code or input data changed (an observed file with a new content hash makes
    the table loaded from it stale: upstream data changed); a descendant of a stale or missing asset is reported
    stale too, naming that ancestor, since it will change when rerun."""
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
        if not graph.get(key).is_materializable:
            report[name] = _observed(instance, key)
            continue
        status = resolver.get_status(key)
        if status == StaleStatus.MISSING:
            report[name] = {"status": "missing", "reason": "never materialized"}
        elif status == StaleStatus.STALE:
            causes = resolver.get_stale_root_causes(key)
            reason = "; ".join(f"{CAUSES.get(c.category.name.lower(), c.category.name.lower())}: "
                               f"{c.asset_key.to_user_string()} {c.reason}" for c in causes)
            report[name] = {"status": "stale", "reason": reason}
        else:
            report[name] = {"status": "fresh", "reason": ""}
        stale_parents = [p.to_user_string() for p in graph.get(key).parent_keys
                         if graph.get(p).is_materializable
                         and report.get(p.to_user_string(), {}).get("status") in ("stale", "missing")]
        if report[name]["status"] == "fresh" and stale_parents:
            report[name] = {"status": "stale", "reason": f"dependency: upstream {', '.join(stale_parents)} out of date"}
    return report
