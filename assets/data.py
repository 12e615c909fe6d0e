"""Stage 0: the hand-written inputs: seed instructions, the reference set and the held-out set."""

import polars as pl
from dagster import Output, asset

from assets._output import table_output
from dagster_project.resource import PipelineResource
from dagster_project.settings import project_path
from resources.datasets import load_examples


def _load(pipeline: PipelineResource, path: str, columns: list[str]) -> Output[pl.DataFrame]:
    location = project_path(path)
    table = load_examples(location, columns, pipeline.settings.data.max_instruction_chars)
    return table_output(table, preview=columns, source=location)


@asset(group_name="data", kinds={"parquet"})
def seed_prompts(pipeline: PipelineResource) -> Output[pl.DataFrame]:
    """Seed instructions the teacher imitates in its few-shot synthesis prompts."""
    return _load(pipeline, pipeline.settings.data.seed_prompts, ["id", "instruction"])


@asset(group_name="data", kinds={"parquet"})
def reference_set(pipeline: PipelineResource) -> Output[pl.DataFrame]:
    """Instruction/response pairs whose student loss defines "this example helps the student"."""
    return _load(pipeline, pipeline.settings.data.reference_set, ["id", "instruction", "response"])


@asset(group_name="data", kinds={"parquet"})
def heldout_set(pipeline: PipelineResource) -> Output[pl.DataFrame]:
    """Held-out instruction/response pairs for evaluation (never used to score influence)."""
    return _load(pipeline, pipeline.settings.data.heldout_set, ["id", "instruction", "response"])
