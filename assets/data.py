"""Stage 0: the hand-written inputs: seed instructions, the reference set and the held-out set."""

import polars as pl
from dagster import Output, asset

from assets.config import ExampleSource
from assets.cost import metered
from assets.output import table_output
from resources.storage.user_data import load_examples


def _load(source: ExampleSource, columns: list[str]) -> Output[pl.DataFrame]:
    table = load_examples(source.location, columns, source.max_instruction_chars, source.columns)
    return table_output(table, preview=columns, source=source.location)


@asset(group_name="data", kinds={"parquet"})
@metered()
def seed_prompts(seed_source: ExampleSource) -> Output[pl.DataFrame]:
    """Seed instructions the teacher imitates in its few-shot synthesis prompts."""
    return _load(seed_source, ["id", "instruction"])


@asset(group_name="data", kinds={"parquet"})
@metered()
def reference_set(reference_source: ExampleSource) -> Output[pl.DataFrame]:
    """Instruction/response pairs whose student loss defines "this example helps the student"."""
    return _load(reference_source, ["id", "instruction", "response"])


@asset(group_name="data", kinds={"parquet"})
@metered()
def heldout_set(heldout_source: ExampleSource) -> Output[pl.DataFrame]:
    """Held-out instruction/response pairs for evaluation (never used to score influence)."""
    return _load(heldout_source, ["id", "instruction", "response"])
