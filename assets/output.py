"""How every asset reports what it wrote: a content-hash data version, its column schema and a typed preview."""

import json
from typing import Any

import polars as pl
from dagster import (
    AssetKey,
    DagsterInstance,
    DataVersion,
    MetadataValue,
    Output,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
)
from upath import UPath

from resources.storage.tables import frame_hash

PREVIEW_ROWS = 5
PREVIEW_WIDTH = 120


def _column_type(dtype: pl.DataType) -> str:
    """Dagster's name for a polars column type (``list<string>`` for a list of strings)."""
    if isinstance(dtype, pl.List):
        return f"list<{_column_type(dtype.inner)}>"
    if dtype == pl.String:
        return "string"
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    return str(dtype).lower()


def column_schema(df: pl.DataFrame) -> TableSchema:
    """The table's columns and their types, as Dagster's column schema."""
    return TableSchema(columns=[TableColumn(name, _column_type(dtype)) for name, dtype in df.schema.items()])


def _cell(value: Any) -> str | int | float | bool | None:
    """A value as a typed table cell: numbers and booleans as they are, text shortened, lists as JSON."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= PREVIEW_WIDTH else text[: PREVIEW_WIDTH - 1] + "…"


def table_preview(df: pl.DataFrame) -> TableMetadataValue:
    """The first rows as Dagster's typed table metadata (long texts shortened)."""
    return MetadataValue.table(
        records=[TableRecord({key: _cell(value) for key, value in row.items()})
                 for row in df.head(PREVIEW_ROWS).iter_rows(named=True)],
        schema=column_schema(df),
    )


def table_output(
    df: pl.DataFrame, preview: list[str], version: str | None = None, **metadata: Any
) -> Output[pl.DataFrame]:
    """Wrap a table as an Output with a DataVersion, row count, its column schema (``dagster/column_schema``) and a
    typed preview of the first rows of the ``preview`` columns, which the UI shows as a table. The version is the
    table's content hash unless given: a checkpoint manifest passes its weights' hash, so retraining to
    identical weights (in another run or store) does not make anything downstream stale."""
    version = version or frame_hash(df)[:16]
    return Output(
        df,
        data_version=DataVersion(version),
        metadata={
            "rows": df.height,
            "data_version": version,
            "preview": table_preview(df.select(preview)),
            "dagster/column_schema": MetadataValue.table_schema(column_schema(df)),
            **metadata,
        },
    )


PATH_METADATA = "path"


def recorded_path(instance: DagsterInstance, key: AssetKey) -> UPath | None:
    """The table path recorded by the latest materialization of ``key``; None if it was never materialized."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    return UPath(metadata[PATH_METADATA].value) if PATH_METADATA in metadata else None
