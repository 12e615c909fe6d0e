"""Dagster IO manager storing every table asset as Parquet through :class:`TableStore`."""

from __future__ import annotations

import polars as pl
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from dagster._core.definitions.data_version import extract_data_version_from_entry
from upath import UPath

from resources.retry import RetryPolicy
from resources.storage import TableStore

STAMPED_COLUMNS = ("teacher_version",)


class ParquetIOManager(ConfigurableIOManager):
    """Writes polars tables to ``{base_path}/{asset key}.parquet`` atomically; stamps the run id
    (and the table's teacher_version, if it has one) into the Parquet metadata."""

    base_path: str
    retry_attempts: int = 5
    retry_backoff_seconds: float = 0.5

    def _store(self) -> TableStore:
        return TableStore(self.base_path, RetryPolicy(self.retry_attempts, self.retry_backoff_seconds))

    def _location(self, context: InputContext | OutputContext) -> UPath:
        if not context.has_asset_key:  # an intermediate op output inside a graph-backed asset
            return self._store().location("_steps", *context.get_identifier())
        parts = list(context.asset_key.path)
        if context.has_asset_partitions:
            parts.append(context.asset_partition_key)
        return self._store().location(*parts)

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        """Publish the table and report its path and row count."""
        key = context.asset_key.to_user_string() if context.has_asset_key else "/".join(context.get_identifier())
        metadata = {"dagster_run_id": context.run_id, "asset_key": key}
        for column in STAMPED_COLUMNS:
            if column in obj.columns:
                metadata[column] = ",".join(sorted(obj[column].drop_nulls().unique().to_list()))
        path = self._store().write(obj, self._location(context), metadata)
        context.add_output_metadata({"path": MetadataValue.path(str(path)), "dagster/row_count": obj.height})
        if context.has_asset_key:
            context.add_output_metadata({"upstream_data_versions": MetadataValue.json(_upstream_versions(context))})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        """Read the upstream asset's table."""
        path = self._location(context)
        if not path.exists():
            raise FileNotFoundError(f"no table at {path}; materialize the upstream asset first")
        return TableStore.read(path, self._store().policy)


def _upstream_versions(context: OutputContext) -> dict[str, str | None]:
    """The data version of each upstream asset's latest materialization (what this output was made from)."""
    step = context.step_context
    parents = step.job_def.asset_layer.asset_graph.get(context.asset_key).parent_keys
    versions = {}
    for key in sorted(parents):
        record = step.instance.get_latest_data_version_record(key)
        version = extract_data_version_from_entry(record.event_log_entry) if record else None
        versions[key.to_user_string()] = version.value if version else None
    return versions
