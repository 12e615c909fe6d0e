"""Stages 2-3: warm the student up, then score each candidate's local influence on the reference loss."""

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    DynamicOut,
    DynamicOutput,
    MetadataValue,
    OpExecutionContext,
    Output,
    asset,
    graph_asset,
    op,
)

from assets._output import table_output
from dagster_project.resource import PipelineResource
from dagster_project.settings import project_path
from resources.influence_cache import InfluenceCache
from resources.pairs import positive_share
from resources.storage import frame_hash
from resources.student import merge_shards, score_with_cache, shard_candidates, split_warmup, train_warm_student
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
    return table_output(manifest, manifest.columns, version=published.content_hash[:16],
                        student_version=published.content_hash[:16],
                        warmup_losses=MetadataValue.json(losses))


@op(out=DynamicOut(pl.DataFrame))
def plan_influence_shards(pipeline: PipelineResource, synthetic_instructions: pl.DataFrame):  # noqa: ANN201
    """Split the candidates into ``influence.shards`` shards by synthesis prompt (round robin, stable)."""
    _, candidates = _split(pipeline, synthetic_instructions)
    candidates = candidates.select("candidate_id", "prompt_id", "prompt", "instruction", "response")
    for index, shard in enumerate(shard_candidates(candidates, pipeline.settings.influence.shards)):
        yield DynamicOutput(shard, mapping_key=f"shard_{index}")


def score_candidates(
    pipeline: PipelineResource, candidates: pl.DataFrame, warm_student: pl.DataFrame, reference_set: pl.DataFrame,
    log: Callable[[str], None],
) -> pl.DataFrame:
    """Influence of each (instruction, response) row from the warm student's state, with the settings'
    method; cached scores are reused and each finished chunk is cached at once."""
    settings = pipeline.settings.influence
    pipeline.prepare_torch()
    student_version = warm_student["student_version"][0]
    # sharding and chunking do not change a score
    method_params = settings.model_dump(mode="json", exclude={"shards", "chunk_size"})
    cache = InfluenceCache(project_path(pipeline.settings.storage.tables), student_version,
                           frame_hash(reference_set), method_params)
    scores = score_with_cache(
        cache, candidates, log, warm_folder=pipeline.checkpoints().local_folder(warm_student["uri"][0]),
        reference=reference_set, method=settings.method, param_pattern=settings.param_pattern,
        batch_size=settings.reference_batch_size, max_length=settings.max_length, device=pipeline.device,
        dtype=pipeline.dtype, chunk_size=settings.chunk_size,
    )
    return scores.with_columns(
        method=pl.lit(settings.method),
        method_params=pl.lit(json.dumps(method_params, sort_keys=True)),
        student_version=pl.lit(student_version),
    )


@op(tags={"montessori/stage": "influence"})
def score_influence_shard(
    context: OpExecutionContext,
    pipeline: PipelineResource,
    shard: pl.DataFrame,
    warm_student: pl.DataFrame,
    reference_set: pl.DataFrame,
) -> pl.DataFrame:
    """Score one shard's candidates (cached scores are reused)."""
    context.log.info(f"shard of {shard.height} candidates, method={pipeline.settings.influence.method}")
    return score_candidates(pipeline, shard, warm_student, reference_set, context.log.info)


@op
def merge_influence_shards(context: OpExecutionContext, shards: list[pl.DataFrame]) -> Output[pl.DataFrame]:
    """Merge shard scores in candidate order, whatever order the shards finished in."""
    scores = merge_shards(shards)
    shares = {b: positive_share(scores, b) for b in ("before_step", "null_step")}
    context.log.info(f"share of positive influence: {shares}")
    return table_output(
        scores, ["candidate_id", "influence", "loss_before", "loss_after", "loss_null_step", "instruction"],
        positive_share=shares, shards=len(shards), influence_summary=MetadataValue.md(_summary(scores)),
    )


@graph_asset(group_name="influence", kinds={"pytorch", "parquet"})
def influence_scores(
    synthetic_instructions: pl.DataFrame, warm_student: pl.DataFrame, reference_set: pl.DataFrame
) -> pl.DataFrame:
    """Loss before, loss after one AdamW step, null-step loss and influence for every candidate,
    scored in parallel shards (one step per shard; one worker or pod each) and merged."""
    shards = plan_influence_shards(synthetic_instructions)
    scored = shards.map(lambda shard: score_influence_shard(shard, warm_student, reference_set))
    return merge_influence_shards(scored.collect())


def _summary(scores: pl.DataFrame) -> str:
    described = scores.select("influence", null_step=pl.col("loss_null_step") - pl.col("loss_after")).describe()
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        return str(described)
