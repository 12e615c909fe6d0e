"""Each preference signal and target does what it promises through the preference_pairs asset itself
(materialized with small resources on hand-made influence scores)."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import asset, materialize

from assets.config import PairSettings, Runtime
from assets.teacher import build_preference_pairs
from tests.engines.preference.test_pairs import candidates, per_prompt

SCORES = candidates(prompts=6, per_prompt=4, seed=5)


@asset(name="influence_scores")
def hand_made_scores() -> pl.DataFrame:
    """Scored candidates: influence losses, the warm student's loss and the raw outputs."""
    return SCORES


def pairs_of(signal: str, target: str = "instruction", seed: int = 0) -> tuple[pl.DataFrame, dict]:
    """The preference_pairs asset's table and metadata under ``signal`` / ``target`` / runtime ``seed``."""
    result = materialize(
        [hand_made_scores, build_preference_pairs(1, "teacher")],
        resources={
            "pairs": PairSettings(rule="rank", signal=signal, target=target),
            "runtime": Runtime(device="cpu", precision="float32", torch_threads=1, seed=seed),
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("preference_pairs")[0].metadata
    return result.output_for_node("preference_pairs"), {key: value.value for key, value in metadata.items()}


def by_id(column: str) -> dict[str, float]:
    return dict(zip(SCORES["candidate_id"], SCORES[column], strict=True))


def pair_ids(pairs: pl.DataFrame) -> list[tuple[str, str]]:
    return list(pairs.select("chosen_id", "rejected_id").iter_rows())


def test_influence_prefers_the_candidate_that_lowers_the_reference_loss_more() -> None:
    pairs, metadata = pairs_of("influence")
    influence = {c: null - after for c, null, after in
                 zip(SCORES["candidate_id"], SCORES["loss_null_step"], SCORES["loss_after"], strict=True)}
    assert pairs.height == 6 * 4  # rank rule: 2 above the median x 2 below, per prompt
    assert all(influence[c] > influence[r] for c, r in pair_ids(pairs))
    assert (metadata["signal"], metadata["target"]) == ("influence", "instruction")
    assert set(pairs["signal"]) == {"influence"}


def test_random_keeps_the_prompts_and_counts_and_follows_the_runtime_seed() -> None:
    influence, _ = pairs_of("influence")
    first, metadata = pairs_of("random", seed=1)
    assert per_prompt(first) == per_prompt(influence) and metadata["signal"] == "random"
    assert pair_ids(pairs_of("random", seed=1)[0]) == pair_ids(first), "same runtime.seed, same pairs"
    assert pair_ids(pairs_of("random", seed=2)[0]) != pair_ids(first), "runtime.seed drives the draw"
    assert pair_ids(first) != pair_ids(influence)


def test_student_loss_prefers_the_candidate_the_warm_student_finds_harder() -> None:
    pairs, metadata = pairs_of("student_loss")
    loss = by_id("candidate_loss")
    assert pairs.height == 6 * 4 and metadata["signal"] == "student_loss"
    assert all(loss[c] > loss[r] for c, r in pair_ids(pairs))


@pytest.mark.parametrize("signal", ["influence", "random", "student_loss"])
def test_raw_output_target_holds_the_teacher_outputs_of_the_same_pairs(signal: str) -> None:
    raw, metadata = pairs_of(signal, target="raw_output")
    parsed, _ = pairs_of(signal)
    assert pair_ids(raw) == pair_ids(parsed) and metadata["target"] == "raw_output"
    outputs = by_id("raw_output")
    assert raw["chosen"].to_list() == [outputs[c] for c, _ in pair_ids(raw)]
    assert raw["rejected"].to_list() == [outputs[r] for _, r in pair_ids(raw)]
