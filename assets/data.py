"""Stage 0: the hand-written inputs. Each user file is an observed source asset whose data version is the content
hash of its bytes (:func:`observed_file`); the seed instructions, the reference set and the held-out set are loaded
from them, so an edited file makes its table and everything downstream stale (upstream data changed)."""

import warnings
from collections.abc import Iterator

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    DataVersion,
    MetadataValue,
    ObserveResult,
    Output,
    asset,
    multi_observable_source_asset,
)

from assets.config import DATA_FILES, ExampleSource
from assets.cost import metered
from assets.output import table_output
from resources.storage.user_data import content_version, load_examples

FILE_SUFFIX = "_file"


def observed_file(setting: str, resource_key: str) -> AssetsDefinition:
    """The observed source asset ``{setting}_file`` (e.g. ``seed_prompts_file`` for ``data.seed_prompts``): observing
    it hashes the file or folder at the ``location`` of resource ``resource_key`` (local or ``s3://``, by its bytes)
    and records the hash as the asset's data version; the assets that declare it as a dependency go stale when the
    hash changes. Observed on demand (the UI's Observe button, every ``montessori`` command) and by the daemon."""
    key = f"{setting}{FILE_SUFFIX}"
    with warnings.catch_warnings():  # the public decorator for an observed AssetsDefinition is marked beta
        warnings.simplefilter("ignore", BetaWarning)
        return _observer(key, setting, resource_key)


def _observer(key: str, setting: str, resource_key: str) -> AssetsDefinition:
    """The observable source asset of :func:`observed_file`."""
    @multi_observable_source_asset(
        name=f"observe_{key}", required_resource_keys={resource_key},
        specs=[AssetSpec(key, group_name="data", kinds={"file"},
                         description=f"The file of data.{setting}, observed: its data version is its content hash")],
    )
    def observe(context: AssetExecutionContext) -> Iterator[ObserveResult]:
        location = getattr(context.resources, resource_key).location
        yield ObserveResult(asset_key=key, data_version=DataVersion(content_version(location)),
                            metadata={"path": MetadataValue.path(location), "setting": f"data.{setting}"})

    return observe


OBSERVED_FILES = [observed_file(setting, key) for key, setting in DATA_FILES.items()]


def _load(source: ExampleSource, columns: list[str]) -> Output[pl.DataFrame]:
    table = load_examples(source.location, columns, source.max_instruction_chars, source.columns)
    return table_output(table, preview=columns, source=source.location)


@asset(group_name="data", kinds={"parquet"}, deps=[f"seed_prompts{FILE_SUFFIX}"])
@metered()
def seed_prompts(seed_source: ExampleSource) -> Output[pl.DataFrame]:
    """Seed instructions the teacher imitates in its few-shot synthesis prompts."""
    return _load(seed_source, ["id", "instruction"])


@asset(group_name="data", kinds={"parquet"}, deps=[f"reference_set{FILE_SUFFIX}"])
@metered()
def reference_set(reference_source: ExampleSource) -> Output[pl.DataFrame]:
    """Instruction/response pairs whose student loss defines "this example helps the student"."""
    return _load(reference_source, ["id", "instruction", "response"])


@asset(group_name="data", kinds={"parquet"}, deps=[f"heldout_set{FILE_SUFFIX}"])
@metered()
def heldout_set(heldout_source: ExampleSource) -> Output[pl.DataFrame]:
    """Held-out instruction/response pairs for evaluation (never used to score influence)."""
    return _load(heldout_source, ["id", "instruction", "response"])
