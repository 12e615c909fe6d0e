"""A person's review of the preference pairs before the teacher's DPO: keep, drop or swap each pair.

The flow: :func:`review_sheet` turns the current pairs (of every round) into a sheet with empty ``decision`` and
``note`` columns; :func:`write_sheet` writes it as CSV or JSONL (by the file's extension); a reviewer fills in
``decision`` (``keep`` / ``drop`` / ``swap``, any case) and optionally ``note`` and ``reviewer``;
:func:`apply_review` joins the decisions back onto the pairs by ``pair_id``. Only ``round``, ``pair_id``,
``decision``, ``note`` and ``reviewer`` are read back: edited texts or scores are ignored, the pairs' own are used.

A sheet that does not cover exactly one round's current pairs (a pair id the pairs do not have, a pair the sheet
lacks, a pair listed twice, an empty or unknown decision) is rejected as a whole by :class:`ReviewError`, naming
the file, the rows (1-based, header not counted) and what to run; so is a review that drops every pair.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import polars as pl
from upath import UPath

DECISIONS = ("keep", "drop", "swap")
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
SHEET_COLUMNS = ["round", "pair_id", "prompt_id", "prompt", "chosen", "rejected", "chosen_score", "rejected_score",
                 "margin", "signal", "decision", "note", "reviewer"]
READ_COLUMNS = ("pair_id", "decision")
NO_PAIRS_LEFT = "no pairs left after review"
UNNAMED = "unnamed"


class ReviewError(ValueError):
    """A review sheet that cannot be applied to the current pairs."""


def pair_ids(pairs: pl.DataFrame) -> pl.Series:
    """A stable id per pair: the hash of its chosen and rejected candidate ids and its target."""
    keys = zip(pairs["chosen_id"], pairs["rejected_id"], pairs["target"], strict=True)
    return pl.Series("pair_id", [hashlib.sha256("\x00".join(key).encode()).hexdigest()[:12] for key in keys],
                     dtype=pl.String)


def review_sheet(pairs_by_round: Mapping[int, pl.DataFrame], reviewer: str | None = None) -> pl.DataFrame:
    """The sheet of every round's pairs, decisions and notes empty, ``reviewer`` filled in when given."""
    parts = [
        pairs.with_columns(pair_ids(pairs)).select(
            pl.lit(number, dtype=pl.Int64).alias("round"), "pair_id", "prompt_id", "prompt", "chosen", "rejected",
            "chosen_score", "rejected_score", "margin", "signal",
            decision=pl.lit("", dtype=pl.String), note=pl.lit("", dtype=pl.String),
            reviewer=pl.lit(reviewer or "", dtype=pl.String),
        )
        for number, pairs in sorted(pairs_by_round.items())
    ]
    return pl.concat(parts).select(SHEET_COLUMNS)


def sheet_format(path: str | os.PathLike[str]) -> str:
    """``csv`` or ``jsonl``, from the file's extension."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FORMATS:
        raise ReviewError(f"review sheet {path}: unknown extension {suffix!r}; use .csv or .jsonl")
    return FORMATS[suffix]


def write_sheet(sheet: pl.DataFrame, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``sheet`` to the local file ``path`` (CSV or JSONL by extension), atomically; an existing file (a
    review perhaps half filled in) is only replaced with ``overwrite``."""
    path = Path(path)
    kind = sheet_format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (a review in progress?); choose another file or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        if kind == "csv":
            sheet.write_csv(scratch)
        else:
            sheet.write_ndjson(scratch)
        os.replace(scratch, path)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return path


def sheet_version(path: str) -> str:
    """The content hash of the sheet's bytes: its data version, recorded as the review's version."""
    return hashlib.sha256(UPath(path).read_bytes()).hexdigest()[:16]


def read_sheet(path: str) -> pl.DataFrame:
    """The sheet's rows, every column as text (empty cells as empty strings)."""
    kind = sheet_format(path)
    source = UPath(path)
    if not source.exists():
        raise ReviewError(f"review sheet {path} does not exist")
    with source.open("rb") as handle:
        try:
            table = pl.read_csv(handle, infer_schema=False) if kind == "csv" else pl.read_ndjson(handle)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise ReviewError(f"review sheet {path} cannot be read as {kind}: {exc}") from exc
    missing = [column for column in READ_COLUMNS if column not in table.columns]
    if missing:
        raise ReviewError(f"review sheet {path} has no {', '.join(missing)} column")
    return table.select(pl.col(c).cast(pl.String).fill_null("") for c in table.columns)


def _problem(rows: pl.DataFrame, what: str) -> str | None:
    if rows.height == 0:
        return None
    listed = ", ".join(f"{row} ({pair})" for row, pair in rows.select("row", "pair_id").head(10).iter_rows())
    more = f" and {rows.height - 10} more" if rows.height > 10 else ""
    return f"{what}: rows {listed}{more}"


def apply_review(pairs: pl.DataFrame, sheet: pl.DataFrame, round_number: int, path: str, rerun: str) -> pl.DataFrame:
    """Round ``round_number``'s ``pairs`` with ``sheet`` (read from ``path``) joined on: columns ``pair_id``,
    ``decision``, ``note``, ``reviewer`` and ``review`` (the sheet's version), swapped pairs turned around (their
    margin negative). Raise :class:`ReviewError` naming the file, the rows and ``rerun`` (the commands that fix
    it) when the sheet does not cover the pairs exactly or drops them all."""
    rows = sheet.with_row_index("row", offset=1).with_columns(decision=pl.col("decision").str.strip_chars()
                                                               .str.to_lowercase())
    if "round" in rows.columns:
        rows = rows.filter(pl.col("round").str.strip_chars() == str(round_number))
    current = pairs.with_columns(pair_ids(pairs))
    known = set(current["pair_id"])
    listed = set(rows["pair_id"])
    absent = sorted(known - listed)
    problems = [
        _problem(rows.filter(~pl.col("pair_id").is_in(known)), "pair ids not among the current pairs (the pairs "
                 "were rebuilt since the export?)"),
        _problem(rows.filter(pl.col("pair_id").is_duplicated()), "pairs listed more than once"),
        _problem(rows.filter(pl.col("decision") == ""), "no decision"),
        _problem(rows.filter((pl.col("decision") != "") & ~pl.col("decision").is_in(DECISIONS)),
                 f"unknown decision (use {', '.join(DECISIONS)})"),
        f"{len(absent)} current pair(s) missing from the sheet: {', '.join(absent[:10])}" if absent else None,
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ReviewError(f"review sheet {path} does not cover round {round_number}'s current pairs:\n  "
                          + "\n  ".join(problems) + f"\n{rerun}")
    decisions = rows.select("pair_id", "decision", note=_text(rows, "note"), reviewer=_text(rows, "reviewer"))
    joined = current.join(decisions, on="pair_id", how="left")
    if joined.filter(pl.col("decision") != "drop").height == 0:
        raise ReviewError(f"review sheet {path}: {NO_PAIRS_LEFT} (all {joined.height} pairs of round "
                          f"{round_number} are marked drop); DPO needs at least one kept or swapped pair.\n{rerun}")
    swap = pl.col("decision") == "swap"
    turned = joined.with_columns(
        *(pl.when(swap).then(pl.col(other)).otherwise(pl.col(column)).alias(column)
          for column, other in [("chosen", "rejected"), ("rejected", "chosen"), ("chosen_id", "rejected_id"),
                                ("rejected_id", "chosen_id"), ("chosen_score", "rejected_score"),
                                ("rejected_score", "chosen_score")]),
        margin=pl.when(swap).then(-pl.col("margin")).otherwise(pl.col("margin")),
    )
    return turned.with_columns(review=pl.lit(sheet_version(path), dtype=pl.String))


def review_summary(pairs: pl.DataFrame) -> dict[str, str | int]:
    """What the teacher manifest and the audit record of the review of ``pairs``: the sheet's version (``off``
    for pairs nobody reviewed), the reviewers and how many pairs were kept, dropped and swapped."""
    if "decision" not in pairs.columns:
        return {"review": "off", "reviewer": "", "pairs_kept": pairs.height, "pairs_dropped": 0, "pairs_swapped": 0}
    names = sorted({name for name in pairs["reviewer"] if name})
    counts = {f"pairs_{name}": pairs.filter(pl.col("decision") == decision).height
              for name, decision in [("kept", "keep"), ("dropped", "drop"), ("swapped", "swap")]}
    return {"review": pairs["review"][0], "reviewer": ", ".join(names) or UNNAMED, **counts}


def _text(rows: pl.DataFrame, column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars() if column in rows.columns else pl.lit("", dtype=pl.String)


def dpo_pairs(reviewed: pl.DataFrame) -> pl.DataFrame:
    """The pairs DPO trains on: every pair of an unreviewed table, the kept and swapped ones of a reviewed one."""
    if "decision" not in reviewed.columns:
        return reviewed
    return reviewed.filter(pl.col("decision") != "drop")
