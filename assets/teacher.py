"""Stages 4-5: preference pairs from influence (or a control signal), then DPO of the teacher on them."""

import json
import tempfile
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, Output, asset

from assets.config import DPOSettings, ModelSource, PairSettings, Runtime, Stores, TrainingLauncher
from assets.cost import count_examples, metered
from assets.output import table_output
from assets.placement import on_gpu, round_key_path
from resources.preference.pairs import build_pairs, positive_share
from resources.preference.review import dpo_pairs, review_summary
from resources.training.trl_trainers import run_dpo


def build_preference_pairs(round_number: int, group: str) -> AssetsDefinition:
    """Round ``round_number``'s preference pairs from its influence scores."""

    @asset(key=round_key_path("preference_pairs", round_number), group_name=group, kinds={"parquet"},
           ins={"influence_scores": AssetIn(round_key_path("influence_scores", round_number))})
    @metered()
    def preference_pairs(
        context: AssetExecutionContext, pairs: PairSettings, runtime: Runtime, influence_scores: pl.DataFrame
    ) -> Output[pl.DataFrame]:
        """(prompt, chosen, rejected, margin) for every preferred-vs-dispreferred sample pair of a prompt under
        ``pairs.signal`` (influence, random or the student's loss), holding ``pairs.target``'s texts."""
        share = positive_share(influence_scores, pairs.baseline)
        context.log.info(f"{share:.0%} of candidates score positive against the {pairs.baseline} baseline; "
                         f"signal {pairs.signal}, target {pairs.target}")
        table = build_pairs(influence_scores, pairs.baseline, pairs.rule, pairs.min_margin, signal=pairs.signal,
                            target=pairs.target, seed=runtime.seed)
        if table.height == 0:
            raise ValueError(
                f"no preference pairs: no prompt has a chosen and a rejected sample with margin >= "
                f"{pairs.min_margin} under signal={pairs.signal!r}, baseline={pairs.baseline!r}, "
                f"rule={pairs.rule!r} ({share:.0%} positive). Try pairs.baseline: null_step, pairs.rule: rank, "
                "a lower pairs.min_margin, or more samples per prompt."
            )
        return table_output(table, ["prompt_id", "margin", "chosen", "rejected"], positive_share=share,
                            prompts_with_pairs=table["prompt_id"].n_unique(), signal=pairs.signal,
                            target=pairs.target)

    return preference_pairs


def _tune(
    context: AssetExecutionContext, dpo: DPOSettings, runtime: Runtime, launcher: TrainingLauncher, stores: Stores,
    preference_pairs: pl.DataFrame, base: str,
) -> Output[pl.DataFrame]:
    """DPO of the teacher at ``base`` (policy and reference) on ``preference_pairs``; publish the weights."""
    params = dpo.params(runtime.seed)
    count_examples(preference_pairs.height)
    runtime.prepare_torch()
    signal, target = preference_pairs["signal"][0], preference_pairs["target"][0]
    review = review_summary(preference_pairs)
    trained = dpo_pairs(preference_pairs)
    context.log.info(f"DPO of {base} on {trained.height} pairs ({signal} signal, {target}; review: "
                     f"{review['review']}): {params}")
    with tempfile.TemporaryDirectory() as scratch:
        history = run_dpo(base, trained, params, Path(scratch), runtime.torch_device, runtime.precision,
                          launcher.launch(), context.log.info)
        published = stores.checkpoint_store().publish(Path(scratch), "teacher")
    teacher_version = published.content_hash[:16]
    manifest = pl.DataFrame({
        "teacher_version": [teacher_version], "uri": [published.uri], "base_model": [base],
        "beta": [params.beta], "learning_rate": [params.learning_rate], "epochs": [params.epochs],
        "batch_size": [params.batch_size], "pairs": [trained.height], "signal": [signal],
        "target": [target], "run_id": [context.run.run_id],
        "lora": [params.lora is not None], "accelerate_config": [launcher.accelerate_config],
        "dpo_history": [json.dumps(history)], **{key: [value] for key, value in review.items()},
    }, schema_overrides={"accelerate_config": pl.String})
    context.log.info(f"teacher_version {teacher_version} at {published.uri}")
    return table_output(manifest, ["teacher_version", "uri", "pairs", "signal", "review"], version=teacher_version,
                        teacher_version=teacher_version, base_model=base, signal=signal, target=target,
                        pairs=trained.height, dpo_log=MetadataValue.json(history), **review)


def build_teacher_checkpoint(round_number: int, group: str, reviewed: bool = False) -> AssetsDefinition:
    """Round ``round_number``'s tuned teacher: round 1 tunes the configured teacher, round n tunes round n-1's;
    on the reviewed pairs when ``reviewed`` (``pairs.review: required``)."""
    pairs = "reviewed_pairs" if reviewed else "preference_pairs"
    ins = {"preference_pairs": AssetIn(round_key_path(pairs, round_number))}
    if round_number > 1:
        ins["previous_teacher"] = AssetIn(round_key_path("teacher_checkpoint", round_number - 1))
    decorator = asset(key=round_key_path("teacher_checkpoint", round_number), group_name=group, kinds={"pytorch"},
                      ins=ins, **on_gpu("teacher_checkpoint"))
    if round_number == 1:

        @decorator
        @metered()
        def teacher_checkpoint(
            context: AssetExecutionContext, dpo: DPOSettings, runtime: Runtime, launcher: TrainingLauncher,
            stores: Stores, teacher: ModelSource, preference_pairs: pl.DataFrame,
        ) -> Output[pl.DataFrame]:
            """The DPO-tuned teacher's weights in the checkpoint store; ``teacher_version`` is their content hash."""
            return _tune(context, dpo, runtime, launcher, stores, preference_pairs, teacher.folder())

        return teacher_checkpoint

    @decorator
    @metered()
    def next_round_teacher_checkpoint(
        context: AssetExecutionContext, dpo: DPOSettings, runtime: Runtime, launcher: TrainingLauncher,
        stores: Stores, preference_pairs: pl.DataFrame, previous_teacher: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """This round's teacher: the previous round's tuned teacher, DPO-tuned again on this round's pairs."""
        base = stores.checkpoint_store().local_folder(previous_teacher["uri"][0])
        return _tune(context, dpo, runtime, launcher, stores, preference_pairs, base)

    return next_round_teacher_checkpoint
