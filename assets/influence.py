"""Stages 2-3: warm the student up, then score each candidate's local influence on the reference loss."""

import tempfile
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets._output import table_output
from dagster_project.resource import PipelineResource
from dagster_project.settings import project_path
from resources.influence_cache import InfluenceCache
from resources.pairs import positive_share
from resources.storage import frame_hash
from resources.student import score_with_cache, split_warmup, train_warm_student
from resources.training import WarmupConfig


def _split(pipeline: PipelineResource, synthetic: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    kept = synthetic.filter(pl.col("kept"))
    return split_warmup(kept, pipeline.settings.warmup.fraction, pipeline.settings.runtime.seed)


@asset(group_name="influence", kinds={"pytorch"})
def warm_student(
    context: AssetExecutionContext, pipeline: PipelineResource, synthetic_instructions: pl.DataFrame
) -> Output[pl.DataFrame]:
    """The student after warm-up SFT, with its AdamW state, as a checkpoint manifest."""
    warm, _ = _split(pipeline, synthetic_instructions)
    settings = pipeline.settings.warmup
    config = WarmupConfig(settings.learning_rate, settings.epochs, settings.batch_size, settings.weight_decay,
                          pipeline.settings.runtime.seed)
    pipeline.prepare_torch()
    base = pipeline.model_folder("student")
    with tempfile.TemporaryDirectory() as scratch:
        losses = train_warm_student(base, warm, config, settings.max_length, Path(scratch), pipeline.device,
                                    pipeline.dtype, context.log.info)
        published = pipeline.checkpoints().publish(Path(scratch), "warm_student")
    manifest = pl.DataFrame({
        "student_version": [published.content_hash[:16]], "uri": [published.uri], "base_model": [base],
        "warmup_rows": [warm.height], "final_loss": [losses[-1]],
    })
    return table_output(manifest, manifest.columns, student_version=published.content_hash[:16],
                        warmup_losses=MetadataValue.json(losses))


@asset(group_name="influence", kinds={"pytorch", "parquet"})
def influence_scores(
    context: AssetExecutionContext,
    pipeline: PipelineResource,
    synthetic_instructions: pl.DataFrame,
    warm_student: pl.DataFrame,
    reference_set: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Loss before, loss after one AdamW step, null-step loss and influence for every candidate."""
    settings = pipeline.settings.influence
    _, candidates = _split(pipeline, synthetic_instructions)
    candidates = candidates.select("candidate_id", "prompt_id", "prompt", "instruction", "response")
    pipeline.prepare_torch()
    warm_folder = pipeline.checkpoints().local_folder(warm_student["uri"][0])
    context.log.info(f"{candidates.height} candidates, method={settings.method}")
    student_version = warm_student["student_version"][0]
    cache = InfluenceCache(project_path(pipeline.settings.storage.tables), student_version,
                           frame_hash(reference_set), settings.model_dump(mode="json"))
    scores = score_with_cache(
        cache, candidates, context.log.info, warm_folder=warm_folder, reference=reference_set,
        method=settings.method, param_pattern=settings.param_pattern, batch_size=settings.reference_batch_size,
        max_length=settings.max_length, device=pipeline.device, dtype=pipeline.dtype,
    )
    scores = scores.with_columns(method=pl.lit(settings.method), method_params=pl.lit(settings.model_dump_json()),
                                 student_version=pl.lit(student_version))
    shares = {b: positive_share(scores, b) for b in ("before_step", "null_step")}
    context.log.info(f"share of positive influence: {shares}")
    return table_output(
        scores, ["candidate_id", "influence", "loss_before", "loss_after", "loss_null_step", "instruction"],
        positive_share=shares, influence_summary=MetadataValue.md(_summary(scores)),
    )


def _summary(scores: pl.DataFrame) -> str:
    described = scores.select("influence", null_step=pl.col("loss_null_step") - pl.col("loss_after")).describe()
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        return str(described)
