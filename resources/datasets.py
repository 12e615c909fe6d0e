"""Loading and validating the project's small JSONL/Parquet data sets with polars."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from upath import UPath


class DataError(ValueError):
    """A data file is missing, malformed or fails validation; the message names the file and row."""


def _read(path: str) -> pl.DataFrame:
    location = UPath(path)
    if not location.exists():
        raise DataError(f"{path}: file does not exist")
    raw = location.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 ({exc.reason})") from None
    if Path(location.path).suffix == ".parquet":
        return pl.read_parquet(raw)
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    try:
        return pl.read_ndjson(raw, infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: not valid JSONL ({exc})") from None


def load_examples(path: str, columns: list[str], max_chars: int) -> pl.DataFrame:
    """Load a table with string ``columns`` (e.g. id, instruction[, response]) and validate every row:
    required columns present, non-empty strings, ``instruction`` at most ``max_chars``, unique ids."""
    table = _read(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {table.columns}")
    table = table.select(columns)
    for column in columns:
        if table.schema[column] != pl.String:
            raise DataError(f"{path}: column {column!r} must hold strings, found {table.schema[column]}")
        blank = table.with_row_index("row").filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if blank.height:
            raise DataError(f"{path}: row {blank['row'][0] + 1} has an empty {column!r}")
    too_long = table.with_row_index("row").filter(pl.col("instruction").str.len_chars() > max_chars)
    if too_long.height:
        row = too_long["row"][0] + 1
        raise DataError(f"{path}: row {row} instruction is longer than the limit of {max_chars} characters")
    duplicated = table.filter(pl.col("id").is_duplicated())["id"].unique().to_list()
    if duplicated:
        raise DataError(f"{path}: duplicate id(s) {sorted(duplicated)[:5]}")
    return table
