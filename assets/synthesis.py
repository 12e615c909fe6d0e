"""Stage 1: the teacher writes synthetic instructions (and answers) from few-shot seed prompts."""

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from assets._output import table_output
from assets._rounds import PREVIOUS_TEACHER, ROUND_N
from dagster_project.resource import PipelineResource

PREVIEW = ["prompt_id", "sample_index", "verdict", "instruction", "response"]
ROUND_SEED_STEP = 100  # round n builds its prompts with seed + 100 (n - 1): new candidates each round


def verdict_counts(table: pl.DataFrame) -> dict[str, int]:
    """How many samples got each filter verdict."""
    return {v: n for v, n in table["verdict"].value_counts().sort("verdict").iter_rows()}


def synthesize_candidates(
    context: AssetExecutionContext, pipeline: PipelineResource, seed_prompts: pl.DataFrame, teacher: str,
    seed_offset: int,
) -> Output[pl.DataFrame]:
    """Candidates written by the teacher at ``teacher`` from ``synthesis.num_prompts`` few-shot prompts."""
    table = pipeline.synthesize(teacher, seed_prompts, pipeline.settings.synthesis.num_prompts, seed_offset,
                                context.log.info)
    kept = int(table["kept"].sum())
    if kept == 0:
        raise ValueError(f"every synthetic instruction was filtered out: {verdict_counts(table)}")
    return table_output(table, PREVIEW, kept=kept, verdicts=verdict_counts(table), teacher=teacher)


@asset(group_name="synthesis", kinds={"pytorch", "parquet"})
def synthetic_instructions(
    context: AssetExecutionContext, pipeline: PipelineResource, seed_prompts: pl.DataFrame
) -> Output[pl.DataFrame]:
    """Every sampled instruction with its prompt, raw output, filter verdict and (if kept) answer."""
    return synthesize_candidates(context, pipeline, seed_prompts, pipeline.model_folder("teacher"), 0)


@asset(key=[ROUND_N, "synthetic_instructions"], ins={"previous_teacher": PREVIOUS_TEACHER},
       kinds={"pytorch", "parquet"})
def next_round_synthetic_instructions(
    context: AssetExecutionContext, pipeline: PipelineResource, seed_prompts: pl.DataFrame,
    previous_teacher: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Round n's new candidates, written by the previous round's tuned teacher from fresh few-shot prompts."""
    folder = pipeline.checkpoints().local_folder(previous_teacher["uri"][0])
    round_number = int(context.asset_key.path[0].removeprefix("round_"))
    return synthesize_candidates(context, pipeline, seed_prompts, folder, ROUND_SEED_STEP * (round_number - 1))
