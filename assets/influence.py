"""Stages 2-3: warm the student up, then score each candidate's local influence on the reference loss."""

import json
from collections.abc import Callable

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    DynamicOut,
    DynamicOutput,
    MetadataValue,
    OpExecutionContext,
    Output,
    asset,
    graph_asset,
    op,
)

from assets.config import InfluenceSettings, ModelSource, Runtime, Stores, WarmupSettings
from assets.cost import count_examples, metered
from assets.output import table_output
from assets.placement import gpu_op, on_gpu, round_key_path
from resources.influence.feature_store import FeatureStore
from resources.influence.score_cache import InfluenceCache
from resources.influence.scoring import (
    SOURCE_COLUMN,
    first_order_influences,
    merge_shards,
    projected_scores,
    score_with_cache,
    shard_candidates,
)
from resources.preference.pairs import positive_share
from resources.storage.tables import frame_hash
from resources.training.warm_start import split_warmup
from resources.training.warm_student_cache import warm_student_checkpoint


def _split(warmup: WarmupSettings, runtime: Runtime, synthetic: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return split_warmup(synthetic.filter(pl.col("kept")), warmup.fraction, runtime.seed)


def build_warm_student(round_number: int, group: str) -> AssetsDefinition:
    """Round ``round_number``'s warm student, trained on part of that round's candidates."""

    @asset(key=round_key_path("warm_student", round_number), group_name=group, kinds={"pytorch"},
           ins={"synthetic_instructions": AssetIn(round_key_path("synthetic_instructions", round_number))},
           **on_gpu("warm_student"))
    @metered()
    def warm_student(
        context: AssetExecutionContext, warmup: WarmupSettings, runtime: Runtime, stores: Stores,
        student: ModelSource, synthetic_instructions: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """The student after warm-up SFT, with its AdamW state, as a checkpoint manifest (a warm-up with the same
        inputs published earlier in this checkpoint store is reused: :mod:`resources.training.warm_student_cache`)."""
        warm, _ = _split(warmup, runtime, synthetic_instructions)
        count_examples(warm.height)
        runtime.prepare_torch()
        base = student.folder()
        published, losses, reused = warm_student_checkpoint(
            base, warm, warmup.params(runtime.seed), warmup.max_length, warmup.truncation, runtime.torch_device,
            runtime.precision, stores.cache_store(), stores.checkpoint_store(), context.log.info,
        )
        version = published.content_hash[:16]
        manifest = pl.DataFrame({
            "student_version": [version], "uri": [published.uri], "base_model": [base],
            "warmup_rows": [warm.height], "final_loss": [losses[-1]],
        })
        return table_output(manifest, manifest.columns, version=version, student_version=version,
                            warmup_losses=MetadataValue.json(losses), reused=reused)

    return warm_student


def feature_store(influence: InfluenceSettings, runtime: Runtime, stores: Stores,
                  warm_student: pl.DataFrame) -> FeatureStore | None:
    """The projected method's feature store for this warm student and these settings (None for other methods)."""
    if influence.method != "projected":
        return None
    return FeatureStore(stores.cache_store(), warm_student["student_version"][0],
                        influence.params().feature_settings(runtime.dtype))


def score_candidates(
    influence: InfluenceSettings, runtime: Runtime, stores: Stores, candidates: pl.DataFrame,
    warm_student: pl.DataFrame, reference_set: pl.DataFrame, log: Callable[[str], None],
) -> pl.DataFrame:
    """Influence of each (instruction, response) row from the warm student's state, with the settings'
    method; cached scores are reused and each finished chunk is cached at once (projected: the candidates'
    features are served from, or built into, the feature store, so a new reference set needs no candidate backward
    pass). The ``scored_from`` column says where each score came from."""
    runtime.prepare_torch()
    student_version = warm_student["student_version"][0]
    method_params = influence.versioned_config()  # sharding and chunking do not change a score
    cache = InfluenceCache(stores.cache_store(), student_version, frame_hash(reference_set), method_params)
    scores = score_with_cache(
        cache, stores.checkpoint_store().local_folder(warm_student["uri"][0]), reference_set, candidates,
        influence.params(), runtime.torch_device, runtime.dtype, log,
        feature_store(influence, runtime, stores, warm_student),
    )
    return scores.with_columns(
        method=pl.lit(influence.method),
        method_params=pl.lit(json.dumps(method_params, sort_keys=True)),
        student_version=pl.lit(student_version),
    )


def influence_against(
    influence: InfluenceSettings, runtime: Runtime, stores: Stores, candidates: pl.DataFrame,
    warm_student: pl.DataFrame, references: list[pl.DataFrame], log: Callable[[str], None],
) -> list[list[float]]:
    """Each candidate's influence against each of ``references`` (one list per set, candidates in order): with
    the first-order method from one pass over the candidates
    (:func:`resources.influence.scoring.first_order_influences`); with the projected method from the feature store
    (features the influence stage stored are reused: one reference gradient per set,
    :func:`resources.influence.scoring.projected_scores`); otherwise one :func:`score_candidates` per set. The same
    numbers either way."""
    folder = stores.checkpoint_store().local_folder(warm_student["uri"][0])
    if influence.method == "first_order":
        runtime.prepare_torch()
        return first_order_influences(folder, references, candidates, influence.params(), runtime.torch_device,
                                      runtime.dtype, log)
    if influence.method == "projected":
        runtime.prepare_torch()
        tables = projected_scores(feature_store(influence, runtime, stores, warm_student), folder, references,
                                  candidates, influence.params(), runtime.torch_device, runtime.dtype, log)
        return [table["influence"].to_list() for table in tables]
    return [score_candidates(influence, runtime, stores, candidates, warm_student, reference, log)["influence"]
            .to_list() for reference in references]


def build_influence(round_number: int, group: str) -> AssetsDefinition:
    """Round ``round_number``'s influence scores: a graph of a planning step, one scoring step per shard (a worker
    or pod each) and a merge."""
    prefix = "" if round_number == 1 else f"round_{round_number}__"

    @op(name=f"{prefix}plan_influence_shards", out=DynamicOut(pl.DataFrame))
    def plan_influence_shards(  # noqa: ANN202 - yields DynamicOutputs
        influence: InfluenceSettings, warmup: WarmupSettings, runtime: Runtime, synthetic_instructions: pl.DataFrame
    ):
        """Split the candidates into ``influence.shards`` shards by synthesis prompt (round robin, stable)."""
        _, candidates = _split(warmup, runtime, synthetic_instructions)
        candidates = candidates.select("candidate_id", "prompt_id", "prompt", "instruction", "response", "raw_output")
        for index, shard in enumerate(shard_candidates(candidates, influence.shards)):
            yield DynamicOutput(shard, mapping_key=f"shard_{index}")

    @op(name=f"{prefix}score_influence_shard", **gpu_op("score_influence_shard"))
    @metered()
    def score_influence_shard(
        context: OpExecutionContext, influence: InfluenceSettings, runtime: Runtime, stores: Stores,
        shard: pl.DataFrame, warm_student: pl.DataFrame, reference_set: pl.DataFrame,
    ) -> Output[pl.DataFrame]:
        """Score one shard's candidates (cached scores are reused); the output carries the step's usage."""
        context.log.info(f"shard of {shard.height} candidates, method={influence.method}")
        return score_candidates(influence, runtime, stores, shard, warm_student, reference_set, context.log.info)

    @op(name=f"{prefix}merge_influence_shards")
    @metered(examples_from_rows=False)  # the shards' steps count the candidates
    def merge_influence_shards(context: OpExecutionContext, shards: list[pl.DataFrame]) -> Output[pl.DataFrame]:
        """Merge shard scores in candidate order, whatever order the shards finished in; the metadata counts where
        the scores came from (``scored_from``: score cache, feature store, computed), a column the table drops."""
        scores = merge_shards(shards)
        sources = dict(sorted(scores[SOURCE_COLUMN].value_counts().iter_rows()))
        scores = scores.drop(SOURCE_COLUMN)
        shares = {b: positive_share(scores, b) for b in ("before_step", "null_step")}
        context.log.info(f"share of positive influence: {shares}; scores from: {sources}")
        return table_output(
            scores, ["candidate_id", "influence", "loss_before", "loss_after", "loss_null_step", "instruction"],
            positive_share=shares, shards=len(shards), influence_summary=MetadataValue.md(_summary(scores)),
            scored_from=MetadataValue.json(sources),
        )

    @graph_asset(
        key=round_key_path("influence_scores", round_number), group_name=group, kinds={"pytorch", "parquet"},
        ins={"synthetic_instructions": AssetIn(round_key_path("synthetic_instructions", round_number)),
             "warm_student": AssetIn(round_key_path("warm_student", round_number)),
             "reference_set": AssetIn("reference_set")},
    )
    def influence_scores(
        synthetic_instructions: pl.DataFrame, warm_student: pl.DataFrame, reference_set: pl.DataFrame
    ) -> pl.DataFrame:
        """Loss before, loss after one AdamW step, null-step loss and influence for every candidate,
        scored in parallel shards (one step per shard; one worker or pod each) and merged."""
        shards = plan_influence_shards(synthetic_instructions)
        scored = shards.map(lambda shard: score_influence_shard(shard, warm_student, reference_set))
        return merge_influence_shards(scored.collect())

    return influence_scores


def _summary(scores: pl.DataFrame) -> str:
    described = scores.select("influence", null_step=pl.col("loss_null_step") - pl.col("loss_after")).describe()
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        return str(described)
