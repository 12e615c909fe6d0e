"""Dagster IO manager storing every table asset as an immutable, content-addressed Parquet file.

Each materialization writes ``{tables}/{namespace}/{asset key}/{data_version}.parquet`` (through
:class:`~resources.storage.tables.TableStore`, atomically, never replacing a stored file; identical data keeps its path)
and records the path as metadata. An input is read from the path recorded by the upstream asset's latest
materialization, the one this run resolved, never from "whatever file is newest".
"""

from __future__ import annotations

import polars as pl
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from assets.config import PriceSettings, Stores
from assets.cost import STEP_USAGE, ledger_metadata
from assets.output import PATH_METADATA, recorded_path
from resources.cost.ledger import CostLedger
from resources.storage.tables import TableStore, frame_hash

STAMPED_COLUMNS = ("teacher_version",)


class ParquetIOManager(ConfigurableIOManager):
    """Writes polars tables to ``{stores.tables}/{stores.namespace}/{asset key}/{data version}.parquet``; stamps
    the run id (and the table's teacher_version, if it has one) into the Parquet metadata. A metered step's usage
    goes into the run's cost ledger (priced with ``prices``), and an asset's stage totals onto its materialization."""

    stores: Stores
    prices: PriceSettings = PriceSettings()

    def _store(self) -> TableStore:
        return self.stores.table_store()

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        """Publish the table as a new version (or find the identical one already stored); report its path."""
        store = self._store()
        if STEP_USAGE in context.output_metadata:
            ledger = CostLedger(store, self.stores.namespace)
            asset = context.asset_key.to_user_string() if context.has_asset_key else None
            context.add_output_metadata(ledger_metadata(ledger, self.prices.table(), context.run_id, context.step_key,
                                                        asset, context.output_metadata[STEP_USAGE]))
        if not context.has_asset_key:  # an intermediate op output inside a graph-backed asset: run-scoped
            path = store.write(obj, store.location("_steps", *context.get_identifier()))
            context.add_output_metadata({PATH_METADATA: MetadataValue.path(str(path))})
            return
        metadata = {"dagster_run_id": context.run_id, "asset_key": context.asset_key.to_user_string()}
        for column in STAMPED_COLUMNS:
            if column in obj.columns:
                metadata[column] = ",".join(sorted(obj[column].drop_nulls().unique().to_list()))
        declared = context.output_metadata.get("data_version")  # set by assets.output.table_output
        version = str(getattr(declared, "value", declared) or frame_hash(obj)[:16])
        written = store.write_version(obj, self.stores.namespace, context.asset_key.path, version, metadata)
        if written.status == "kept_existing":
            context.log.info(f"version {version} of {context.asset_key.to_user_string()} is already stored at "
                             f"{written.path} (same data version, e.g. identical weights); kept as it is")
        context.add_output_metadata({PATH_METADATA: MetadataValue.path(str(written.path)),
                                     "dagster/row_count": obj.height, "storage": written.status,
                                     "settings": MetadataValue.path(self.stores.settings_file())})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        """Read the exact table the upstream materialization recorded."""
        if not context.has_asset_key:
            return TableStore.read(self._store().location("_steps", *context.get_identifier()), self._store().policy)
        path = recorded_path(context.instance, context.asset_key)
        if path is None:
            raise FileNotFoundError(f"{context.asset_key.to_user_string()} has no recorded table; materialize it first")
        if not path.exists():
            raise FileNotFoundError(f"the table of {context.asset_key.to_user_string()} recorded at {path} is gone "
                                    "(pruned or deleted); materialize the upstream asset again")
        return TableStore.read(path, self._store().policy)

