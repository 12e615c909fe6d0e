"""Stage 6: the tuned teacher writes the final student dataset."""

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from assets._output import table_output
from assets.synthesis import verdict_counts
from dagster_project.resource import PipelineResource


@asset(group_name="student", kinds={"parquet"})
def student_dataset(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    teacher_checkpoint: pl.DataFrame,
    seed_prompts: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Instruction/response pairs by the tuned teacher; every row names its teacher_version and run."""
    settings = pipeline.settings.student_dataset
    teacher_version = teacher_checkpoint["teacher_version"][0]
    folder = pipeline.checkpoints().local_folder(teacher_checkpoint["uri"][0])
    table = pipeline.synthesize(folder, seed_prompts, settings.num_prompts, settings.seed_offset, context.log.info)
    dataset = table.filter(pl.col("kept")).select(
        "candidate_id", "prompt_id", "instruction", "response",
        teacher_version=pl.lit(teacher_version), source_run=pl.lit(context.run_id),
    )
    if dataset.height == 0:
        raise ValueError(f"the tuned teacher produced no usable instruction: {verdict_counts(table)}")
    return table_output(dataset, ["instruction", "response"], teacher_version=teacher_version,
                        verdicts=verdict_counts(table))
