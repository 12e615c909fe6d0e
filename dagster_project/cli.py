"""The ``montessori`` command: materialize the graph for a profile into the Dagster instance."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    JobExecutionResult,
    build_reconstructable_job,
    execute_job,
)

from dagster_project.definitions import build_definitions, pipeline_job, prepare_process
from dagster_project.lineage import (
    export_provenance,
    file_stamp,
    find_materialization,
    lineage,
    protected_paths,
    versions,
)
from dagster_project.settings import PROJECT_ROOT, SettingsError, load_settings
from dagster_project.staleness import asset_status
from resources.storage.export import CardInfo, export_dataset, push_to_hub
from resources.storage.prune import delete_versions, plan_prune
from resources.storage.tables import TableStore

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


def _print_table(summary: dict[str, dict[str, object]]) -> None:
    print(f"\n{'asset':<24}{'rows':>6}{'seconds':>10}  path")
    for name, row in summary.items():
        print(f"{name:<24}{row['rows']!s:>6}{row['seconds']!s:>10}  {row['path']}")


def _load(profile: str) -> tuple[Definitions, DagsterInstance]:
    os.environ["MONTESSORI_PROFILE"] = profile
    defs = build_definitions(profile)
    ensure_dagster_home()
    return defs, DagsterInstance.get()


def status(args: argparse.Namespace) -> int:
    """Print every asset as fresh / stale (and why) / missing."""
    defs, instance = _load(args.profile)
    report = asset_status(defs, instance)
    if args.json:
        print(json.dumps(report))
    else:
        for name, row in report.items():
            print(f"{name:<24}{row['status']:<9}{row['reason']}")
    return 0


def _print_lineage(node: dict, depth: int = 0) -> None:
    pad = "  " * depth
    print(f"{pad}{node['asset']}  data_version={node['data_version']} run={node['run_id']} "
          f"at {datetime.fromtimestamp(node['timestamp'], timezone.utc):%Y-%m-%d %H:%M:%S}Z")
    for key, value in node["metadata"].items():
        print(f"{pad}    {key}: {value}")
    for child in node["inputs"]:
        _print_lineage(child, depth + 1)


def audit(args: argparse.Namespace) -> int:
    """Trace a dataset file or an asset back through every stage that produced it."""
    ensure_dagster_home()
    instance = DagsterInstance.get()
    try:
        record = find_materialization(instance, args.target)
    except (LookupError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tree = lineage(instance, record)
    stamp = file_stamp(args.target) if args.target.endswith(".parquet") else {}
    if args.json:
        print(json.dumps({"file": stamp, "lineage": tree}, default=str))
    else:
        if stamp:
            print(f"file {args.target}: " + ", ".join(f"{k}={v}" for k, v in stamp.items()))
        _print_lineage(tree)
    return 0


def execute_pipeline(
    profile: str, selection: Sequence[AssetKey] | None, instance: DagsterInstance,
    tags: Mapping[str, str] | None = None,
) -> JobExecutionResult:
    """Materialize ``selection`` (None: every asset) of ``profile`` in ``instance``, through a reconstructable
    pointer so that every worker process (multiprocess executor) rebuilds exactly this profile's job."""
    return execute_job(
        build_reconstructable_job("dagster_project.definitions", pipeline_job.__name__, (profile,)),
        instance=instance,
        asset_selection=selection,
        tags={"montessori/profile": profile, **(tags or {})},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )


def run(args: argparse.Namespace) -> int:
    """Materialize the graph (or ``--select``) for ``--profile``; print the summary."""
    defs, instance = _load(args.profile)
    selection = args.select
    if args.stale_only:
        report = asset_status(defs, instance)
        selection = [AssetKey.from_user_string(n) for n, row in report.items() if row["status"] != "fresh"]
        if not selection:
            print("every asset is fresh; nothing to run")
            if args.json:
                print(json.dumps({"run_id": None, "assets": {}}))
            return 0
        print("materializing stale or missing: " + ", ".join(k.to_user_string() for k in selection))
    if isinstance(selection, str):
        selection = list(AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph()))
    result = execute_pipeline(args.profile, selection, instance)
    summary = run_summary(instance, result)
    _print_table(summary)
    if not result.success:
        print(f"\nrun {result.run_id} FAILED; see the log above or the Dagster UI", file=sys.stderr)
        return 1
    if "student_dataset" in summary:
        print(f"\nstudent dataset: {summary['student_dataset']['path']}")
    for row in summary.values():
        if "comparison" in row:
            print(f"Montessori vs Self-Instruct: {row['comparison']}")
        if "report_path" in row:
            print(f"report: {row['report_path']}/report.md")
    print(f"run {result.run_id} in {instance.root_directory}")
    if args.json:
        print(json.dumps({"run_id": result.run_id, "assets": summary}))
    return 0


def versions_command(args: argparse.Namespace) -> int:
    """List the materializations of one asset, each with its own file."""
    ensure_dagster_home()
    rows = versions(DagsterInstance.get(), args.asset)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'time (UTC)':<20} {'run':<10} {'data version':<18} {'rows':>5}  {'teacher':<17} path")
    for row in rows:
        when = datetime.fromtimestamp(row["timestamp"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        gone = "" if row["exists"] else "  (pruned)"
        print(f"{when:<20} {row['run_id'][:8]:<10} {row['data_version']!s:<18} {row['rows']!s:>5}  "
              f"{row['teacher_version'] or '-':<17} {row['path']}{gone}")
    return 0


def gc_command(args: argparse.Namespace) -> int:
    """Plan (or, with --delete, carry out) pruning of old table versions."""
    defs, instance = _load(args.profile)
    stores = defs.resources["stores"]
    names = [key.to_user_string() for key in defs.resolve_asset_graph().materializable_asset_keys]
    stored = {name: stores.table_store().versions(stores.namespace, AssetKey.from_user_string(name).path)
              for name in names}
    plan = plan_prune(stored, args.keep, protected_paths(instance, names))
    verb = "deleting" if args.delete else "would delete"
    for version in plan.deletions:
        print(f"{verb} {version.path} ({version.size} bytes)")
    print(f"{len(plan.deletions)} version(s), {plan.freed_bytes} bytes; kept the {args.keep} newest per asset and "
          "every version the latest materializations read")
    if args.delete:
        delete_versions(plan)
    else:
        print("dry run: nothing deleted (add --delete)")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Export an asset's latest table (with provenance) as a Hugging Face dataset folder, Parquet or JSONL."""
    defs, instance = _load(args.profile)
    settings = load_settings(args.profile)
    record = find_materialization(instance, args.asset)
    summary = lineage(instance, record)
    table = TableStore.read(record.asset_materialization.metadata["path"].value)
    provenance = export_provenance(instance, record, summary, settings)
    card = CardInfo(pretty_name=settings.export.pretty_name or f"{settings.name}: {args.asset}",
                    license=settings.export.license, task_categories=tuple(settings.export.task_categories))
    folder = export_dataset(table, args.to, provenance, card, args.format, overwrite=args.overwrite)
    print(f"exported {table.height} rows of {args.asset} (run {record.run_id}) to {folder} as {args.format}")
    if args.push_to_hub:
        print(f"pushed to {push_to_hub(folder, args.push_to_hub)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``montessori`` console script."""
    parser = argparse.ArgumentParser(prog="montessori", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize the pipeline")
    run_parser.add_argument("--profile", default="demo", help="bundled profile name or settings file path")
    run_parser.add_argument(
        "--select", default=None, help="Dagster asset selection, e.g. 'teacher_checkpoint*' (it and all downstream)"
    )
    run_parser.add_argument("--stale-only", action="store_true", help="materialize only stale and missing assets")
    run_parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    run_parser.set_defaults(handler=run)
    status_parser = commands.add_parser("status", help="fresh / stale / missing for every asset")
    status_parser.add_argument("--profile", default="demo", help="bundled profile name or settings file path")
    status_parser.add_argument("--json", action="store_true")
    status_parser.set_defaults(handler=status)
    audit_parser = commands.add_parser("audit", help="which teacher, pairs, scores and seeds produced a dataset")
    audit_parser.add_argument("target", help="a dataset .parquet path or an asset name")
    audit_parser.add_argument("--json", action="store_true")
    audit_parser.set_defaults(handler=audit)
    versions_parser = commands.add_parser("versions", help="every materialization of an asset and its file")
    versions_parser.add_argument("asset")
    versions_parser.add_argument("--json", action="store_true")
    versions_parser.set_defaults(handler=versions_command)
    gc_parser = commands.add_parser("gc", help="prune old table versions (dry run unless --delete)")
    gc_parser.add_argument("--profile", default="demo", help="bundled profile name or settings file path")
    gc_parser.add_argument("--keep", type=int, default=3, help="versions kept per asset besides the protected ones")
    gc_parser.add_argument("--delete", action="store_true", help="really delete (default: print the plan)")
    gc_parser.set_defaults(handler=gc_command)
    export_parser = commands.add_parser("export", help="write an asset's table as a Hugging Face dataset with a card")
    export_parser.add_argument("asset", help="e.g. student_dataset")
    export_parser.add_argument("--to", required=True, help="target folder")
    export_parser.add_argument("--format", choices=["hf", "parquet", "jsonl"], default="hf")
    export_parser.add_argument("--profile", default="demo", help="the profile whose settings go into the card")
    export_parser.add_argument("--overwrite", action="store_true", help="replace a non-empty target folder")
    export_parser.add_argument("--push-to-hub", default=None, metavar="REPO",
                               help="also push to this Hub dataset repo (needs HF_TOKEN or a saved login)")
    export_parser.set_defaults(handler=export_command)
    from dagster_project.experiment import add_experiment_command  # it runs pipelines through this module

    add_experiment_command(commands)
    args = parser.parse_args(argv)
    prepare_process()
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
