"""``montessori review export``: the current preference pairs of a profile as a review sheet to fill in."""

from __future__ import annotations

import argparse
import sys

from dagster import AssetKey, DagsterInstance

from assets.output import recorded_path
from assets.placement import round_key_path
from dagster_project.runs import ensure_dagster_home
from dagster_project.settings import load_settings
from resources.preference.review import ReviewError, review_sheet, write_sheet
from resources.storage.tables import TableStore


def export_review(args: argparse.Namespace) -> int:
    """Write every round's latest preference pairs as a review sheet (CSV or JSONL by the file's extension)."""
    settings = load_settings(args.profile)
    ensure_dagster_home()
    instance = DagsterInstance.get()
    pairs = {}
    for number in range(1, settings.rounds + 1):
        key = AssetKey(round_key_path("preference_pairs", number))
        path = recorded_path(instance, key)
        if path is None or not path.exists():
            if number == 1:
                print(f"error: {key.to_user_string()} has no table in this Dagster instance; run "
                      f"`montessori run --profile {args.profile}` first (with pairs.review: required it stops "
                      "right before the teacher's DPO)", file=sys.stderr)
                return 1
            break  # later rounds' pairs come after this round's review: export again then
        pairs[number] = TableStore.read(path)
    try:
        written = write_sheet(review_sheet(pairs, args.reviewer), args.to, overwrite=args.overwrite)
    except (ReviewError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = sum(table.height for table in pairs.values())
    print(f"wrote {rows} pairs of round(s) {', '.join(map(str, pairs))} to {written}: fill in decision (keep, drop "
          f"or swap) and optionally note and reviewer, set data.pair_review: {written} in the profile and run "
          f"`montessori run --profile {args.profile}` again")
    return 0


def add_review_command(commands: argparse._SubParsersAction) -> None:
    """Register ``montessori review export``."""
    review = commands.add_parser("review", help="review the preference pairs before the teacher's DPO")
    actions = review.add_subparsers(dest="review_command", required=True)
    export = actions.add_parser("export", help="write the current pairs as a review sheet (CSV or JSONL)")
    export.add_argument("--profile", default="demo", help="bundled profile name or settings file path")
    export.add_argument("--to", required=True, help="the sheet to write: a .csv or .jsonl file")
    export.add_argument("--reviewer", default=None, help="fill the reviewer column with this name")
    export.add_argument("--overwrite", action="store_true", help="replace an existing sheet")
    export.set_defaults(handler=export_review)
