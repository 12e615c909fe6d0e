"""Preference pairs: baselines and rules on hand-made scores."""

from __future__ import annotations

import polars as pl
import pytest

from resources.pairs import build_pairs, positive_share


def scores(losses_after: list[float], prompt_ids: list[str]) -> pl.DataFrame:
    n = len(losses_after)
    return pl.DataFrame({
        "prompt_id": prompt_ids, "prompt": [f"prompt {p}" for p in prompt_ids],
        "candidate_id": [f"c{i}" for i in range(n)], "instruction": [f"instruction {i}" for i in range(n)],
        "loss_before": [2.0] * n, "loss_null_step": [1.9] * n, "loss_after": losses_after,
    })


def test_paper_rule_yields_nothing_when_all_positive() -> None:
    table = scores([1.85, 1.88, 1.92, 1.95], ["a"] * 4)
    assert positive_share(table, "before_step") == 1.0
    assert build_pairs(table, "before_step", "sign").height == 0


def test_null_step_baseline_separates_within_prompt() -> None:
    table = scores([1.85, 1.88, 1.92, 1.95], ["a"] * 4)
    pairs = build_pairs(table, "null_step", "sign")
    assert pairs.height == 4
    assert set(pairs["chosen_id"]) == {"c0", "c1"} and set(pairs["rejected_id"]) == {"c2", "c3"}
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all()
    assert pairs["margin"].to_list() == pytest.approx([0.07, 0.1, 0.04, 0.07])


def test_pairs_never_cross_prompts_and_rank_rule_splits_at_median() -> None:
    table = scores([1.80, 1.81, 1.82, 1.70, 1.71, 1.72], ["a", "a", "a", "b", "b", "b"])
    pairs = build_pairs(table, "before_step", "rank")
    assert pairs.height == 2
    assert pairs.filter(pl.col("prompt_id") == "a")["chosen_id"].to_list() == ["c0"]
    assert pairs.filter(pl.col("prompt_id") == "b")["rejected_id"].to_list() == ["c5"]


def test_min_margin_and_bad_names() -> None:
    table = scores([1.85, 1.88, 1.92, 1.95], ["a"] * 4)
    assert build_pairs(table, "null_step", "sign", min_margin=0.08).height == 1
    with pytest.raises(ValueError, match="baseline"):
        build_pairs(table, "sometimes", "sign")
    with pytest.raises(ValueError, match="rule"):
        build_pairs(table, "null_step", "vibes")
