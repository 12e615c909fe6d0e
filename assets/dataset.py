"""Stage 6: the tuned teacher writes the final student dataset; the untuned teacher writes the
Self-Instruct baseline from the same prompts."""

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Output, asset

from assets.config import (
    FinalPromptSettings,
    GenerationBackend,
    InfluenceSettings,
    ModelSource,
    Runtime,
    Stores,
    StudentDatasetSettings,
    SynthesisSettings,
)
from assets.cost import metered
from assets.influence import score_candidates
from assets.output import table_output
from assets.placement import on_gpu, round_key_path
from assets.synthesis import synthesize_table, verdict_counts
from resources.preference.weighting import curriculum, sample_weights

UNTUNED = "untuned"


def _final_rows(
    context: AssetExecutionContext, prompts: FinalPromptSettings, synthesis: SynthesisSettings, runtime: Runtime,
    generation: GenerationBackend, stores: Stores, teacher_folder: str, teacher_version: str,
    seed_prompts: pl.DataFrame,
) -> tuple[pl.DataFrame, dict[str, dict]]:
    """Kept instruction/response rows written by the teacher at ``teacher_folder``, stamped with its version; and
    metadata (filter verdicts, generation token counts)."""
    table, tokens = synthesize_table(synthesis, runtime, generation, stores, teacher_folder, seed_prompts,
                                     prompts.num_prompts, prompts.seed_offset, context.log.info)
    dataset = table.filter(pl.col("kept")).select(
        "candidate_id", "prompt_id", "instruction", "response",
        teacher_version=pl.lit(teacher_version), source_run=pl.lit(context.run.run_id),
    )
    if dataset.height == 0:
        raise ValueError(f"the teacher ({teacher_version}) produced no usable instruction: {verdict_counts(table)}")
    return dataset, {"verdicts": verdict_counts(table), "generation": tokens}


def build_student_dataset(last_round: int) -> AssetsDefinition:
    """The final dataset, written by the last round's tuned teacher."""

    @asset(group_name="student", kinds={"parquet"}, **on_gpu("student_dataset"),
           ins={"teacher_checkpoint": AssetIn(round_key_path("teacher_checkpoint", last_round)),
                "warm_student": AssetIn(round_key_path("warm_student", last_round)),
                "seed_prompts": AssetIn("seed_prompts"), "reference_set": AssetIn("reference_set")})
    @metered()
    def student_dataset(
        context: AssetExecutionContext, student_dataset: StudentDatasetSettings, synthesis: SynthesisSettings,
        influence: InfluenceSettings, runtime: Runtime, generation: GenerationBackend, stores: Stores,
        teacher_checkpoint: pl.DataFrame, seed_prompts: pl.DataFrame, warm_student: pl.DataFrame,
        reference_set: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """Instruction/response pairs by the tuned teacher; every row names its teacher_version and run. With
        ``student_dataset.order: curriculum`` or ``sample_weights`` each row is also scored for influence."""
        settings = student_dataset
        teacher_version = teacher_checkpoint["teacher_version"][0]
        folder = stores.checkpoint_store().local_folder(teacher_checkpoint["uri"][0])
        dataset, metadata = _final_rows(context, settings, synthesis, runtime, generation, stores, folder,
                                        teacher_version, seed_prompts)
        if settings.scores_influence:
            scored = score_candidates(influence, runtime, stores, dataset, warm_student, reference_set,
                                      context.log.info)
            dataset = dataset.with_columns(influence=scored["influence"])
            if settings.sample_weights:
                dataset = dataset.with_columns(sample_weights(dataset["influence"]))
            if settings.order == "curriculum":
                dataset = curriculum(dataset)
        return table_output(dataset, ["instruction", "response"], teacher_version=teacher_version,
                            order=settings.order, **metadata)

    return student_dataset


@asset(group_name="evaluation", kinds={"parquet"}, **on_gpu("baseline_dataset"))
@metered()
def baseline_dataset(
    context: AssetExecutionContext, final_prompts: FinalPromptSettings, synthesis: SynthesisSettings,
    runtime: Runtime, generation: GenerationBackend, stores: Stores, teacher: ModelSource,
    seed_prompts: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """The Self-Instruct baseline: the same synthesis, prompts and size settings as student_dataset, written
    by the untuned teacher (``teacher_version`` is ``untuned``)."""
    dataset, metadata = _final_rows(context, final_prompts, synthesis, runtime, generation, stores, teacher.folder(),
                                    UNTUNED, seed_prompts)
    return table_output(dataset, ["instruction", "response"], teacher=teacher.source, **metadata)
