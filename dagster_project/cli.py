"""The ``montessori`` command: materialize the graph for a profile into the Dagster instance."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dagster import DagsterInstance, materialize

from dagster_project.settings import PROJECT_ROOT, SettingsError


def ensure_dagster_home() -> Path:
    """Use ``DAGSTER_HOME`` (default: ``.dagster_home`` in the project) so the UI sees CLI runs."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    return home


def _summary(instance: DagsterInstance, result) -> dict[str, dict[str, object]]:  # noqa: ANN001
    seconds = {
        stat.step_key: round((stat.end_time or 0) - (stat.start_time or 0), 1)
        for stat in instance.get_run_step_stats(result.run_id)
    }
    summary = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        name = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        summary[name] = {
            "path": metadata["path"].value if "path" in metadata else None,
            "rows": metadata["dagster/row_count"].value if "dagster/row_count" in metadata else None,
            "seconds": seconds.get(name),
        }
    return summary


def _print_table(summary: dict[str, dict[str, object]]) -> None:
    print(f"\n{'asset':<24}{'rows':>6}{'seconds':>10}  path")
    for name, row in summary.items():
        print(f"{name:<24}{row['rows']!s:>6}{row['seconds']!s:>10}  {row['path']}")


def run(args: argparse.Namespace) -> int:
    """Materialize the graph (or ``--select``) for ``--profile``; print the summary."""
    from dagster_project.definitions import build_definitions

    os.environ["MONTESSORI_PROFILE"] = args.profile
    defs = build_definitions(args.profile)
    ensure_dagster_home()
    instance = DagsterInstance.get()
    result = materialize(
        list(defs.assets),
        instance=instance,
        resources=defs.resources,
        selection=args.select,
        tags={"montessori/profile": args.profile},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )
    summary = _summary(instance, result)
    _print_table(summary)
    if not result.success:
        print(f"\nrun {result.run_id} FAILED; see the log above or the Dagster UI", file=sys.stderr)
        return 1
    if "student_dataset" in summary:
        print(f"\nstudent dataset: {summary['student_dataset']['path']}")
    print(f"run {result.run_id} in {instance.root_directory}")
    if args.json:
        print(json.dumps({"run_id": result.run_id, "assets": summary}))
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
    run_parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
