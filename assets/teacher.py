"""Stages 4-5: preference pairs from influence, then DPO of the teacher on them."""

import json
import tempfile
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets._output import table_output
from assets._rounds import PREVIOUS_TEACHER, ROUND_N
from dagster_project.resource import PipelineResource
from resources.accelerate_launch import run_dpo
from resources.pairs import build_pairs, positive_share
from resources.training import DPOParams, LoraParams


@asset(group_name="teacher", kinds={"parquet"})
def preference_pairs(
    context: AssetExecutionContext, pipeline: PipelineResource, influence_scores: pl.DataFrame
) -> Output[pl.DataFrame]:
    """(prompt, chosen, rejected, margin) for every helpful-vs-harmful sample pair of a prompt."""
    settings = pipeline.settings.pairs
    share = positive_share(influence_scores, settings.baseline)
    context.log.info(f"{share:.0%} of candidates score positive against the {settings.baseline} baseline")
    pairs = build_pairs(influence_scores, settings.baseline, settings.rule, settings.min_margin)
    if pairs.height == 0:
        raise ValueError(
            f"no preference pairs: no prompt has a chosen and a rejected sample with margin >= "
            f"{settings.min_margin} under baseline={settings.baseline!r}, rule={settings.rule!r} ({share:.0%} "
            "positive). Try pairs.baseline: null_step, pairs.rule: rank, a lower pairs.min_margin, or more "
            "samples per prompt."
        )
    return table_output(pairs, ["prompt_id", "margin", "chosen", "rejected"], positive_share=share,
                        prompts_with_pairs=pairs["prompt_id"].n_unique())


def dpo_params(pipeline: PipelineResource) -> DPOParams:
    """The profile's DPO hyperparameters, with a LoRA adapter when ``dpo.lora.enabled``."""
    settings = pipeline.settings.dpo
    lora = settings.lora
    adapter = LoraParams(lora.r, lora.alpha, lora.dropout, lora.target_modules) if lora.enabled else None
    return DPOParams(settings.beta, settings.learning_rate, settings.epochs, settings.batch_size,
                     settings.max_length, pipeline.settings.runtime.seed, adapter)


def tune_teacher(
    context: AssetExecutionContext, pipeline: PipelineResource, preference_pairs: pl.DataFrame, base: str
) -> Output[pl.DataFrame]:
    """DPO of the teacher at ``base`` (policy and reference) on ``preference_pairs``; publish the weights."""
    params = dpo_params(pipeline)
    pipeline.prepare_torch()
    context.log.info(f"DPO of {base} on {preference_pairs.height} pairs: {params}")
    with tempfile.TemporaryDirectory() as scratch:
        history = run_dpo(base, preference_pairs, params, Path(scratch), pipeline.device,
                          pipeline.settings.runtime.precision, pipeline.accelerate_launch(), context.log.info)
        published = pipeline.checkpoints().publish(Path(scratch), "teacher")
    teacher_version = published.content_hash[:16]
    manifest = pl.DataFrame({
        "teacher_version": [teacher_version], "uri": [published.uri], "base_model": [base],
        "beta": [params.beta], "learning_rate": [params.learning_rate], "epochs": [params.epochs],
        "batch_size": [params.batch_size], "pairs": [preference_pairs.height], "run_id": [context.run.run_id],
        "lora": [params.lora is not None], "accelerate_config": [pipeline.settings.runtime.accelerate_config],
        "dpo_history": [json.dumps(history)],
    }, schema_overrides={"accelerate_config": pl.String})
    context.log.info(f"teacher_version {teacher_version} at {published.uri}")
    return table_output(manifest, ["teacher_version", "uri", "pairs"], version=teacher_version,
                        teacher_version=teacher_version, base_model=base, dpo_log=MetadataValue.json(history))


@asset(group_name="teacher", kinds={"pytorch"})
def teacher_checkpoint(
    context: AssetExecutionContext, pipeline: PipelineResource, preference_pairs: pl.DataFrame
) -> Output[pl.DataFrame]:
    """The DPO-tuned teacher's weights in the checkpoint store; ``teacher_version`` is their content hash."""
    return tune_teacher(context, pipeline, preference_pairs, pipeline.model_folder("teacher"))


@asset(key=[ROUND_N, "teacher_checkpoint"], ins={"previous_teacher": PREVIOUS_TEACHER},
       kinds={"pytorch"})
def next_round_teacher_checkpoint(
    context: AssetExecutionContext, pipeline: PipelineResource, preference_pairs: pl.DataFrame,
    previous_teacher: pl.DataFrame,
) -> Output[pl.DataFrame]:
    """Round n's teacher: the previous round's tuned teacher, DPO-tuned again on round n's pairs."""
    base = pipeline.checkpoints().local_folder(previous_teacher["uri"][0])
    return tune_teacher(context, pipeline, preference_pairs, base)
