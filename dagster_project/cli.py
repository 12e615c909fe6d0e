"""The ``montessori`` command: materialize the graph for a profile into the Dagster instance."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
)

from dagster_project.console import failed_steps
from dagster_project.definitions import build_definitions, prepare_process
from dagster_project.experiment import add_experiment_command
from dagster_project.inspection import add_inspection_commands
from dagster_project.lineage import (
    export_provenance,
    file_stamp,
    find_materialization,
    first_runs,
    lineage,
    protected_paths,
    versions,
)
from dagster_project.review import add_review_command
from dagster_project.runs import (
    ensure_dagster_home,
    execute_pipeline,
    observe_files,
    run_costs,
    run_summary,
    storage_problems,
    with_observed_inputs,
)
from dagster_project.settings import SettingsError, load_settings
from dagster_project.staleness import asset_status
from resources.cost.ledger import Overhead, StageCost, cost_table, overhead
from resources.storage.export import CardInfo, export_dataset, push_to_hub
from resources.storage.prune import delete_versions, plan_prune
from resources.storage.tables import TableStore


def _print_table(summary: dict[str, dict[str, object]]) -> None:
    print(f"\n{'asset':<24}{'rows':>6}{'seconds':>10}  path")
    for name, row in summary.items():
        print(f"{name:<24}{row['rows']!s:>6}{row['seconds']!s:>10}  {row['path']}")


def _print_costs(costs: list[StageCost], montessori_overhead: Overhead | None, run_id: str) -> None:
    if costs:
        print(f"\ncost per stage (`montessori cost --run {run_id[:8]}` prints it again)\n{cost_table(costs)}")
    if montessori_overhead:
        print(montessori_overhead.sentence())


def _load(profile: str) -> tuple[Definitions, DagsterInstance]:
    os.environ["MONTESSORI_PROFILE"] = profile
    defs = build_definitions(profile)
    ensure_dagster_home()
    return defs, DagsterInstance.get()


def _observed_status(defs: Definitions, instance: DagsterInstance) -> dict[str, dict[str, str]]:
    """Observe the data files, then every asset's status; a file that cannot be observed is an error row."""
    unobserved = observe_files(defs, instance)
    report = asset_status(defs, instance)
    for name, cause in unobserved.items():
        report[name] = {"status": "error", "reason": f"cannot observe: {cause}"}
    return report


def status(args: argparse.Namespace) -> int:
    """Observe the data files, then print every asset as fresh / stale (and why) / missing."""
    defs, instance = _load(args.profile)
    report = _observed_status(defs, instance)
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
    path = args.target if args.target.endswith(".parquet") else str(tree["metadata"].get("path", ""))
    stamp = file_stamp(args.target) if args.target.endswith(".parquet") else {}
    rows_by_run = first_runs(path) if path.endswith(".parquet") and not tree["metadata"].get("pruned") else {}
    if args.json:
        print(json.dumps({"file": stamp, "first_runs": rows_by_run, "lineage": tree}, default=str))
    else:
        if stamp:
            print(f"file {args.target}: " + ", ".join(f"{k}={v}" for k, v in stamp.items()))
        for run_id, rows in rows_by_run.items():
            print(f"{rows} row(s) first written by run {run_id}")
        _print_lineage(tree)
    return 0


def run(args: argparse.Namespace) -> int:
    """Materialize the graph (or ``--select``) for ``--profile``; print the summary."""
    defs, instance = _load(args.profile)
    problems = storage_problems(defs.resources["stores"])
    if problems:
        print("\n".join(f"error: {problem}" for problem in problems), file=sys.stderr)
        return 1
    selection = args.select
    graph = defs.resolve_asset_graph()
    if args.stale_only:
        report = _observed_status(defs, instance)
        selection = [key for key in map(AssetKey.from_user_string, report)
                     if graph.get(key).is_materializable and report[key.to_user_string()]["status"] != "fresh"]
        if not selection:
            print("every asset is fresh; nothing to run")
            if args.json:
                print(json.dumps({"run_id": None, "assets": {}}))
            return 0
        print("materializing stale or missing: " + ", ".join(k.to_user_string() for k in selection))
    if isinstance(selection, str):
        selection = list(AssetSelection.from_string(selection).resolve(graph))
    if selection is not None:
        selection = with_observed_inputs(defs, selection)
    result = execute_pipeline(args.profile, selection, instance, verbose=args.verbose)
    summary = run_summary(instance, result)
    _print_table(summary)
    costs = run_costs(defs.resources["stores"], result.run_id)
    montessori_overhead = overhead(costs)
    if not result.success:
        _print_costs(costs, montessori_overhead, result.run_id)  # what the stages that ran used
        where = "above" if args.verbose else "in the run's event log (Dagster UI) or with --verbose"
        print(f"\nrun {result.run_id} FAILED (stack traces {where}); failed steps:", file=sys.stderr)
        for step, cause in failed_steps(instance, result.run_id).items():
            print(f"  {step}: {cause}", file=sys.stderr)
        return 1
    if "student_dataset" in summary:
        print(f"\nstudent dataset: {summary['student_dataset']['path']}")
    for row in summary.values():
        if "comparison" in row:
            print(f"Montessori vs Self-Instruct: {row['comparison']}")
        if "report_path" in row:
            print(f"report: {row['report_path']}/report.md")
    print(f"run {result.run_id} in {instance.root_directory}")
    _print_costs(costs, montessori_overhead, result.run_id)  # last, so the demo ends with what it cost
    if args.json:
        cost = {"stages": {c.asset or c.stage: {**c.usage.as_dict(), "money": c.money} for c in costs},
                "overhead": montessori_overhead.ratio if montessori_overhead else None}
        print(json.dumps({"run_id": result.run_id, "assets": summary, "cost": cost}))
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
    run_parser.add_argument("--verbose", action="store_true", help="print failures with their stack traces")
    run_parser.set_defaults(handler=run)
    status_parser = commands.add_parser(
        "status", help="observe the data files; fresh / stale / missing for each asset")
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
    add_experiment_command(commands)
    add_review_command(commands)
    add_inspection_commands(commands)
    args = parser.parse_args(argv)
    prepare_process()
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
