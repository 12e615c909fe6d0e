"""The one place that uses Dagster internals (``dagster_project/staleness.py``) still works with the installed
Dagster: if an upgrade moves or changes the stale-status resolver, this fails and names the module to fix."""

from __future__ import annotations

import dagster
from dagster import DagsterInstance, Definitions, asset, materialize


def test_staleness_internals_still_resolve_status_and_causes() -> None:
    try:
        from dagster_project.staleness import asset_status
    except ImportError as exc:  # pragma: no cover - only on an incompatible Dagster
        message = f"dagster {dagster.__version__}: dagster_project/staleness.py needs updating: {exc}"
        raise AssertionError(message) from exc

    @asset(code_version="1")
    def upstream() -> int:
        return 1

    @asset(code_version="1")
    def downstream(upstream: int) -> int:
        return upstream + 1

    instance = DagsterInstance.ephemeral()
    assert materialize([upstream, downstream], instance=instance).success
    defs = Definitions(assets=[upstream, downstream])
    assert asset_status(defs, instance) == {"upstream": {"status": "fresh", "reason": ""},
                                            "downstream": {"status": "fresh", "reason": ""}}

    changed = upstream.map_asset_specs(lambda spec: spec.replace_attributes(code_version="2"))
    report = asset_status(Definitions(assets=[changed, downstream]), instance)
    assert report["upstream"]["status"] == "stale" and "code" in report["upstream"]["reason"]
    assert report["downstream"]["status"] == "stale" and "upstream" in report["downstream"]["reason"]
