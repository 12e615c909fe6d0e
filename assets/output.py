"""How every asset reports what it wrote: a content-hash data version and readable metadata."""

from typing import Any

import polars as pl
from dagster import AssetKey, DagsterInstance, DataVersion, MetadataValue, Output
from upath import UPath

from resources.storage.tables import frame_hash


def markdown_preview(df: pl.DataFrame, rows: int = 5, width: int = 60) -> str:
    """The first ``rows`` rows as a markdown table, long strings shortened to ``width`` characters."""
    shortened = df.head(rows).with_columns(
        pl.col(c).str.slice(0, width) for c, t in df.schema.items() if t == pl.String
    )
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=rows, tbl_cols=-1, fmt_str_lengths=width + 3):
        return str(shortened)


def table_output(
    df: pl.DataFrame, preview: list[str], version: str | None = None, **metadata: Any
) -> Output[pl.DataFrame]:
    """Wrap a table as an Output with a DataVersion, row count and a markdown preview. The version is the
    table's content hash unless given: a checkpoint manifest passes its weights' hash, so retraining to
    identical weights (in another run or store) does not make anything downstream stale."""
    version = version or frame_hash(df)[:16]
    return Output(
        df,
        data_version=DataVersion(version),
        metadata={
            "rows": df.height,
            "data_version": version,
            "preview": MetadataValue.md(markdown_preview(df.select(preview))),
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
