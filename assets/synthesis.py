"""Stage 1: the teacher writes synthetic instructions (and answers) from few-shot seed prompts."""

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from assets._output import table_output
from dagster_project.resource import PipelineResource

PREVIEW = ["prompt_id", "sample_index", "verdict", "instruction", "response"]


def verdict_counts(table: pl.DataFrame) -> dict[str, int]:
    """How many samples got each filter verdict."""
    return {v: n for v, n in table["verdict"].value_counts().sort("verdict").iter_rows()}


@asset(group_name="synthesis", kinds={"pytorch", "parquet"})
def synthetic_instructions(
    context: AssetExecutionContext, pipeline: PipelineResource, seed_prompts: pl.DataFrame
) -> Output[pl.DataFrame]:
    """Every sampled instruction with its prompt, raw output, filter verdict and (if kept) answer."""
    settings = pipeline.settings.synthesis
    table = pipeline.synthesize(
        pipeline.model_folder("teacher"), seed_prompts, settings.num_prompts, 0, context.log.info
    )
    kept = int(table["kept"].sum())
    if kept == 0:
        raise ValueError(f"every synthetic instruction was filtered out: {verdict_counts(table)}")
    return table_output(table, PREVIEW, kept=kept, verdicts=verdict_counts(table))
