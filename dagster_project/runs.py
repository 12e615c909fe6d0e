"""Running the pipeline from Python: the Dagster instance's home, observing the data files, one materialization of
a profile's graph, and the per-asset summary of a finished run. Shared by the CLI and the experiments."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    JobExecutionResult,
    build_reconstructable_job,
    execute_job,
)

from assets.config import Stores
from dagster_project.console import failed_steps
from dagster_project.definitions import PIPELINE_JOB, pipeline_job
from dagster_project.settings import PROJECT_ROOT
from resources.cost.ledger import CostLedger, StageCost, stage_costs
from resources.storage.retry import StorageError
from resources.storage.tables import check_writable

INSTANCE_DEFAULTS = Path(__file__).parent / "instance.yaml"  # what `make ui` gives a new DAGSTER_HOME


def ensure_dagster_home() -> Path:
    """Use ``DAGSTER_HOME`` (default: ``.dagster_home`` in the project) so the UI sees CLI runs."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()  # SQLite storage in DAGSTER_HOME, Dagster's default (make ui adds the UI defaults)
    return home


# Metadata worth repeating after the summary table: the evaluation's verdict and where the report is.
HEADLINE_METADATA = ("comparison", "report_path")


def run_summary(instance: DagsterInstance, result) -> dict[str, dict[str, object]]:  # noqa: ANN001
    """Per materialized asset of a finished run: its table's path, rows, seconds and headline metadata."""
    stats = instance.get_run_step_stats(result.run_id)

    def seconds(step_key: str) -> float | None:
        """Wall time of an asset's steps (a graph-backed asset has several, e.g. influence shards)."""
        node = step_key.split(".")[0]
        own = [s for s in stats if s.step_key == node or s.step_key.startswith(f"{node}.")]
        if not own:
            return None
        return round(max(s.end_time or 0 for s in own) - min(s.start_time or 0 for s in own), 1)

    summary = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        name = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        summary[name] = {
            "path": metadata["path"].value if "path" in metadata else None,
            "rows": metadata["dagster/row_count"].value if "dagster/row_count" in metadata else None,
            "seconds": seconds(event.step_key),
            **{key: metadata[key].value for key in HEADLINE_METADATA if key in metadata},
        }
    return summary


def console(verbose: bool = False) -> dict:
    """Run config of the console logger: INFO, one line per message (stack traces with ``verbose``)."""
    return {"loggers": {"console": {"config": {"log_level": "INFO", "verbose": verbose}}}}


OBSERVATION_TAG = "montessori/observation"


def observed_files(defs: Definitions) -> list[AssetKey]:
    """The observed data files of the graph (its observable source assets)."""
    graph = defs.resolve_asset_graph()
    return sorted(key for key in graph.get_all_asset_keys() if graph.get(key).is_observable)


def with_observed_inputs(defs: Definitions, selection: Sequence[AssetKey]) -> list[AssetKey]:
    """``selection`` plus the observed files it reads, so that the run observes them before loading them."""
    graph = defs.resolve_asset_graph()
    files = {parent for key in selection for parent in graph.get(key).parent_keys if graph.get(parent).is_observable}
    return [*sorted(files), *selection]


def observe_files(defs: Definitions, instance: DagsterInstance) -> dict[str, str]:
    """Observe every data file in this process (one short run, in-process whatever the executor): each file's content
    hash becomes its data version. Returns the files that could not be observed, with the cause in one line."""
    result = defs.resolve_job_def(PIPELINE_JOB).execute_in_process(
        instance=instance, asset_selection=observed_files(defs), raise_on_error=False,
        tags={OBSERVATION_TAG: "cli"}, run_config=console(),
    )
    return {step.removeprefix("observe_"): cause for step, cause in failed_steps(instance, result.run_id).items()}


def storage_problems(stores: Stores) -> list[str]:
    """Each storage setting whose location cannot be written (tried with a small probe file, transient faults
    retried), named with its path and the reason; empty when every location is writable."""
    problems = []
    for setting, location in stores.locations().items():
        try:
            check_writable(location, stores.retry_policy)
        except StorageError as exc:
            problems.append(f"{setting}: {location} is not writable: {exc}")
    return problems


def run_costs(stores: Stores, run_id: str) -> list[StageCost]:
    """Per stage of run ``run_id``: what it used and cost, from the run's cost ledger."""
    return stage_costs(CostLedger(stores.table_store(), stores.namespace).read(run_id))


def execute_pipeline(
    profile: str, selection: Sequence[AssetKey] | None, instance: DagsterInstance,
    tags: Mapping[str, str] | None = None, verbose: bool = False,
) -> JobExecutionResult:
    """Materialize ``selection`` (None: every asset, the data files observed first) of ``profile`` in ``instance``,
    through a reconstructable pointer so that every worker process (multiprocess executor) rebuilds exactly this
    profile's job. The console shows one line per message; ``verbose`` adds failures' stack traces."""
    return execute_job(
        build_reconstructable_job("dagster_project.definitions", pipeline_job.__name__, (profile,)),
        instance=instance,
        asset_selection=selection,
        tags={"montessori/profile": profile, **(tags or {})},
        run_config=console(verbose),
    )
