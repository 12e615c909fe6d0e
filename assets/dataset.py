"""Stage 6: the tuned teacher writes the final student dataset; the untuned teacher writes the
Self-Instruct baseline from the same prompts."""

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from assets._output import table_output
from assets.influence import score_candidates
from assets.synthesis import verdict_counts
from dagster_project.resource import PipelineResource
from resources.weighting import curriculum, sample_weights

UNTUNED = "untuned"


def _final_rows(
    context: AssetExecutionContext, pipeline: PipelineResource, teacher_folder: str, teacher_version: str,
    seed_prompts: pl.DataFrame,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Kept instruction/response rows written by the teacher at ``teacher_folder``, stamped with its version."""
    settings = pipeline.settings.student_dataset
    table = pipeline.synthesize(teacher_folder, seed_prompts, settings.num_prompts, settings.seed_offset,
                                context.log.info)
    dataset = table.filter(pl.col("kept")).select(
        "candidate_id", "prompt_id", "instruction", "response",
        teacher_version=pl.lit(teacher_version), source_run=pl.lit(context.run.run_id),
    )
    if dataset.height == 0:
        raise ValueError(f"the teacher ({teacher_version}) produced no usable instruction: {verdict_counts(table)}")
    return dataset, verdict_counts(table)


@asset(group_name="student", kinds={"parquet"})
def student_dataset(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    teacher_checkpoint: pl.DataFrame,
    seed_prompts: pl.DataFrame,
    warm_student: pl.DataFrame,
    reference_set: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Instruction/response pairs by the tuned teacher; every row names its teacher_version and run. With
    ``student_dataset.order: curriculum`` or ``sample_weights`` each row is also scored for influence."""
    settings = pipeline.settings.student_dataset
    teacher_version = teacher_checkpoint["teacher_version"][0]
    folder = pipeline.checkpoints().local_folder(teacher_checkpoint["uri"][0])
    dataset, verdicts = _final_rows(context, pipeline, folder, teacher_version, seed_prompts)
    if settings.scores_influence:
        scored = score_candidates(pipeline, dataset, warm_student, reference_set, context.log.info)
        dataset = dataset.with_columns(influence=scored["influence"])
        if settings.sample_weights:
            dataset = dataset.with_columns(sample_weights(dataset["influence"]))
        if settings.order == "curriculum":
            dataset = curriculum(dataset)
    return table_output(dataset, ["instruction", "response"], teacher_version=teacher_version, verdicts=verdicts,
                        order=settings.order)


@asset(group_name="evaluation", kinds={"parquet"})
def baseline_dataset(
    context: AssetExecutionContext, pipeline: PipelineResource, seed_prompts: pl.DataFrame
) -> Output[pl.DataFrame]:
    """The Self-Instruct baseline: the same synthesis, prompts and size settings as student_dataset, written
    by the untuned teacher (``teacher_version`` is ``untuned``)."""
    dataset, verdicts = _final_rows(context, pipeline, pipeline.model_folder("teacher"), UNTUNED, seed_prompts)
    return table_output(dataset, ["instruction", "response"], teacher=pipeline.settings.models.teacher,
                        verdicts=verdicts)
