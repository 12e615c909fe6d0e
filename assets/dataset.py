"""Stage 6: the tuned teacher writes the final student dataset; the untuned teacher writes the
Self-Instruct baseline from the same prompts."""

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Output, asset

from assets.config import (
    DecontaminationSettings,
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
from assets.output import recorded_path, table_output
from assets.placement import on_gpu, round_key_path
from assets.synthesis import reference_tables, synthesize_table, verdict_counts
from resources.preference.selection import score_columns, select_rows
from resources.preference.weighting import curriculum, sample_weights
from resources.storage.tables import TableStore
from resources.synthesis.decontamination import COLUMNS as MARKS

UNTUNED = "untuned"


def _final_rows(
    context: AssetExecutionContext, prompts: FinalPromptSettings, synthesis: SynthesisSettings,
    decontamination: DecontaminationSettings, runtime: Runtime, generation: GenerationBackend, stores: Stores,
    teacher_folder: str, teacher_version: str, seed_prompts: pl.DataFrame, references: dict[str, pl.DataFrame],
) -> tuple[pl.DataFrame, dict[str, object]]:
    """Kept instruction/response rows written by the teacher at ``teacher_folder``, stamped with its version and
    their contamination marks (a dropped row is not kept; under warn or block a marked row is); and metadata
    (filter verdicts, generation token counts, decontamination counts)."""
    table, metadata = synthesize_table(synthesis, decontamination, runtime, generation, stores, teacher_folder,
                                       seed_prompts, references, prompts.num_prompts, prompts.seed_offset,
                                       context.log.info)
    dataset = table.filter(pl.col("kept")).select(
        "candidate_id", "prompt_id", "instruction", "response", *MARKS,  # warn / block keep marked rows
        teacher_version=pl.lit(teacher_version),
    )
    if dataset.height == 0:
        raise ValueError(f"the teacher ({teacher_version}) produced no usable instruction: {verdict_counts(table)}")
    return _first_runs(context, stores, dataset), {"verdicts": verdict_counts(table), **metadata}


ROW_IDENTITY = ["candidate_id", "teacher_version"]  # the same text (candidate_id hashes it) by the same teacher


def _first_runs(context: AssetExecutionContext, stores: Stores, dataset: pl.DataFrame) -> pl.DataFrame:
    """``dataset`` with ``source_run``, the run that first wrote each row: a row also in this asset's latest stored
    table (same candidate, same teacher) keeps that table's ``source_run``, a new row gets this run's id. The column is
    provenance, outside the content hash (``PROVENANCE_COLUMNS``)."""
    path = recorded_path(context.instance, context.asset_key)
    earlier = pl.DataFrame(schema={**dict.fromkeys(ROW_IDENTITY, pl.String), "source_run": pl.String})
    if path is not None and path.exists():
        stored = TableStore.read(path, stores.retry_policy)
        if {*ROW_IDENTITY, "source_run"} <= set(stored.columns):
            earlier = stored.select(*ROW_IDENTITY, "source_run").unique(ROW_IDENTITY, keep="first")
    return dataset.join(earlier, on=ROW_IDENTITY, how="left", maintain_order="left").with_columns(
        source_run=pl.col("source_run").fill_null(context.run.run_id))


def build_student_dataset(last_round: int) -> AssetsDefinition:
    """The final dataset, written by the last round's tuned teacher."""

    @asset(group_name="student", kinds={"parquet"}, **on_gpu("student_dataset"),
           ins={"teacher_checkpoint": AssetIn(round_key_path("teacher_checkpoint", last_round)),
                "warm_student": AssetIn(round_key_path("warm_student", last_round)),
                "seed_prompts": AssetIn("seed_prompts"), "reference_set": AssetIn("reference_set"),
                "heldout_set": AssetIn("heldout_set")})
    @metered()
    def student_dataset(
        context: AssetExecutionContext, student_dataset: StudentDatasetSettings, synthesis: SynthesisSettings,
        decontamination: DecontaminationSettings, influence: InfluenceSettings, runtime: Runtime,
        generation: GenerationBackend, stores: Stores, teacher_checkpoint: pl.DataFrame, seed_prompts: pl.DataFrame,
        warm_student: pl.DataFrame, reference_set: pl.DataFrame, heldout_set: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """Instruction/response pairs by the tuned teacher; every row names its teacher_version and the run that
        first wrote it. With ``student_dataset.order: curriculum``, ``sample_weights`` or a scored ``select`` rule
        each row is also scored for influence; ``select`` keeps a share of the rows."""
        settings = student_dataset
        teacher_version = teacher_checkpoint["teacher_version"][0]
        folder = stores.checkpoint_store().local_folder(teacher_checkpoint["uri"][0])
        dataset, metadata = _final_rows(context, settings, synthesis, decontamination, runtime, generation, stores,
                                        folder, teacher_version, seed_prompts,
                                        reference_tables(reference_set, heldout_set))
        selection = settings.selection(runtime.seed)
        if settings.scores_influence:
            scored = score_candidates(influence, runtime, stores, dataset, warm_student, reference_set,
                                      context.log.info)
            dataset = dataset.with_columns(scored.select(score_columns(selection)))
        dataset = select_rows(dataset, selection)
        if settings.sample_weights:
            dataset = dataset.with_columns(sample_weights(dataset["influence"]))
        if settings.order == "curriculum":
            dataset = curriculum(dataset)
        return table_output(dataset, ["instruction", "response"], teacher_version=teacher_version,
                            order=settings.order, select=settings.select, **metadata)

    return student_dataset


@asset(group_name="evaluation", kinds={"parquet"}, **on_gpu("baseline_dataset"))
@metered()
def baseline_dataset(
    context: AssetExecutionContext, final_prompts: FinalPromptSettings, synthesis: SynthesisSettings,
    decontamination: DecontaminationSettings, runtime: Runtime, generation: GenerationBackend, stores: Stores,
    teacher: ModelSource, seed_prompts: pl.DataFrame, reference_set: pl.DataFrame, heldout_set: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """The Self-Instruct baseline: the same synthesis, prompts, size and decontamination settings as
    student_dataset, written by the untuned teacher (``teacher_version`` is ``untuned``)."""
    dataset, metadata = _final_rows(context, final_prompts, synthesis, decontamination, runtime, generation, stores,
                                    teacher.folder(), UNTUNED, seed_prompts,
                                    reference_tables(reference_set, heldout_set))
    return table_output(dataset, ["instruction", "response"], teacher=teacher.source, **metadata)
