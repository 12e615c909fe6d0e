"""Loading and validating the user's instruction data sets with polars.

A data set is a JSONL (``.jsonl``, ``.ndjson``), JSON (a list of records), CSV, TSV or Parquet file, the text
formats also gzip-compressed (``.jsonl.gz``, ``.json.gz``, ``.csv.gz``, ...), or a Hugging Face ``datasets`` folder
written by ``save_to_disk``; local or on object storage (``s3://…``, through UPath/fsspec). Any other extension is
refused with the list of supported ones. A UTF-8 byte-order mark is accepted. Columns can be
mapped from the file's own names (e.g. Alpaca's ``output`` as ``response``); an ``input`` column, when
present, is appended to the instruction after one space if it is not empty, as the official code joins
Alpaca-style seeds. Without an ``id`` column each row gets a stable id derived from its content.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Mapping
from pathlib import Path

import polars as pl
from upath import UPath

BOM = b"\xef\xbb\xbf"
OPTIONAL_INPUT = "input"
TEXT_FORMATS = {".jsonl": "JSONL", ".ndjson": "JSONL", ".json": "JSON", ".csv": "CSV", ".tsv": "TSV"}
GZIP = ".gz"
SUPPORTED = (f"{', '.join(TEXT_FORMATS)} (each also gzip-compressed, e.g. .jsonl.gz), .parquet, "
             "or a Hugging Face datasets folder (save_to_disk)")


class DataError(ValueError):
    """A data file is missing, malformed or fails validation; the message names the file and row."""


def _read_hf_folder(path: str, location: UPath) -> pl.DataFrame:
    """The rows of a ``save_to_disk`` folder (one split; a DatasetDict folder with a single split)."""
    if (location / "dataset_dict.json").exists():
        splits = json.loads((location / "dataset_dict.json").read_text())["splits"]
        if len(splits) != 1:
            raise DataError(f"{path}: a DatasetDict with splits {splits}; point at one split's folder, "
                            f"e.g. {path.rstrip('/')}/{splits[0]}")
        return _read_hf_folder(f"{path.rstrip('/')}/{splits[0]}", location / splits[0])
    if not (location / "state.json").exists():
        raise DataError(f"{path}: a folder but not a Hugging Face datasets folder (no state.json or "
                        "dataset_dict.json); give a JSONL, JSON, CSV or Parquet file or a save_to_disk folder")
    files = [entry["filename"] for entry in json.loads((location / "state.json").read_text())["_data_files"]]
    try:
        return pl.concat([pl.read_ipc_stream((location / name).read_bytes()) for name in files], how="vertical")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: cannot read the datasets folder's Arrow files {files} ({exc})") from None


def _decode(path: str, raw: bytes) -> bytes:
    """``raw`` without a UTF-8 byte-order mark, checked to be non-empty UTF-8."""
    raw = raw.removeprefix(BOM)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 ({exc.reason})") from None
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    return raw


def _format(path: str, location: UPath) -> tuple[str, bool]:
    """The file's format suffix (e.g. ``.jsonl``) and whether it is gzip-compressed; an unknown one is refused."""
    name = location.name.lower()
    compressed = name.endswith(GZIP)
    suffix = Path(name.removesuffix(GZIP)).suffix
    if suffix in TEXT_FORMATS or (suffix == ".parquet" and not compressed):
        return suffix, compressed
    kind = (suffix + GZIP if compressed else suffix) or "(no extension)"
    raise DataError(f"{path}: unsupported file type {kind}; supported: {SUPPORTED}")


def _decompress(path: str, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None


def _read(path: str) -> pl.DataFrame:
    location = UPath(path)
    if not location.exists():
        raise DataError(f"{path}: file does not exist")
    if location.is_dir():
        return _read_hf_folder(path, location)
    suffix, compressed = _format(path, location)
    raw = location.read_bytes()
    if compressed:
        raw = _decompress(path, raw)
    try:
        if suffix == ".parquet":
            return pl.read_parquet(raw)
        raw = _decode(path, raw)
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(raw, infer_schema=False, separator="\t" if suffix == ".tsv" else ",")
        if suffix == ".json":
            if not raw.lstrip().startswith(b"["):
                raise DataError(f"{path}: a .json file must hold a list of records: [{{...}}, {{...}}]")
            return pl.read_json(raw, infer_schema_length=None)
        return pl.read_ndjson(raw, infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: not valid {TEXT_FORMATS.get(suffix, 'Parquet')} ({exc})") from None


def content_version(path: str) -> str:
    """The content hash of a data file (its bytes) or a datasets folder (every file's relative path and bytes):
    what an observation of the file records as its data version. Read through UPath, so ``s3://`` objects are
    hashed by their bytes too."""
    location = UPath(path)
    if not location.exists():
        raise DataError(f"{path}: file does not exist")
    digest = hashlib.sha256()
    if location.is_dir():
        for entry in sorted((p for p in location.rglob("*") if p.is_file()), key=lambda p: p.path):
            digest.update(entry.path.removeprefix(location.path).encode() + b"\x00")
            digest.update(entry.read_bytes())
    else:
        digest.update(location.read_bytes())
    return digest.hexdigest()[:16]


def content_ids(table: pl.DataFrame) -> pl.Series:
    """Stable ids from each row's content (SHA-256 of its columns); a repeated row gets ``-2``, ``-3``, …"""
    joined = table.select(pl.concat_str(pl.all(), separator="\x1f"))[:, 0].to_list()
    digests = pl.Series("id", [hashlib.sha256(text.encode()).hexdigest()[:16] for text in joined])
    repeat = pl.int_range(pl.len()).over("id")
    return digests.to_frame().select(
        pl.when(repeat == 0).then(pl.col("id")).otherwise(pl.format("{}-{}", pl.col("id"), repeat + 1))
    )["id"]


def _check_strings(path: str, table: pl.DataFrame, names: dict[str, str], required: list[str]) -> None:
    """Every column holds strings; the ``required`` ones are never null or blank."""
    for column in table.columns:
        if table.schema[column] not in (pl.String, pl.Null):
            raise DataError(f"{path}: column {names[column]!r} must hold strings, found {table.schema[column]}")
    for column in required:
        blank = table.with_row_index("row").filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if blank.height:
            raise DataError(f"{path}: row {blank['row'][0] + 1} has an empty {names[column]!r}")


def load_examples(
    path: str, columns: list[str], max_chars: int, column_map: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """Load a table with string ``columns`` (e.g. id, instruction[, response]) and validate every row:
    required columns present, non-empty strings, ``instruction`` at most ``max_chars``, unique ids.

    ``column_map`` maps these names (and ``input``) to the file's column names where they differ. The
    ``id`` column is optional, as is ``input`` (appended to the instruction after a space when not empty)."""
    column_map = dict(column_map or {})
    unknown = sorted(set(column_map) - {*columns, OPTIONAL_INPUT})
    if unknown:
        raise DataError(f"{path}: column mapping names unknown column(s) {unknown}; "
                        f"it maps {[*columns, OPTIONAL_INPUT]} to the file's columns")
    source = {name: column_map.get(name, name) for name in [*columns, OPTIONAL_INPUT]}
    table = _read(path)
    missing = [source[c] for c in columns if source[c] not in table.columns and (c != "id" or "id" in column_map)]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {table.columns}")
    present = [c for c in [*columns, OPTIONAL_INPUT] if source[c] in table.columns]
    table = table.select(pl.col(source[c]).alias(c) for c in present)
    required = [c for c in present if c != OPTIONAL_INPUT]
    _check_strings(path, table, {c: source[c] for c in present}, required)
    if OPTIONAL_INPUT in present:
        extra = pl.col(OPTIONAL_INPUT).fill_null("")
        table = table.with_columns(
            instruction=pl.when(extra != "").then(pl.format("{} {}", "instruction", extra)).otherwise("instruction")
        )
    too_long = table.with_row_index("row").filter(pl.col("instruction").str.len_chars() > max_chars)
    if too_long.height:
        row = too_long["row"][0] + 1
        raise DataError(f"{path}: row {row} instruction is longer than the limit of {max_chars} characters")
    if "id" in columns and "id" not in present:
        table = table.with_columns(content_ids(table.select(c for c in columns if c != "id")))
    duplicated = table.filter(pl.col("id").is_duplicated())["id"].unique().to_list() if "id" in columns else []
    if duplicated:
        raise DataError(f"{path}: duplicate id(s) {sorted(duplicated)[:5]}")
    return table.select(columns)


def content_digest(path: str) -> str:
    """SHA-256 (first 16 hex digits, as ``sha256sum`` prints them) of a data file's bytes; of a ``datasets``
    folder, of its files' relative names and bytes in name order: what a result computed from the data depends on,
    wherever it lies."""
    location = UPath(path)
    if not location.exists():
        raise DataError(f"{path}: file does not exist")
    if not location.is_dir():
        return hashlib.sha256(location.read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(p for p in location.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(location)}\0".encode() + file.read_bytes())
    return digest.hexdigest()[:16]
