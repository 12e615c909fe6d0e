"""Preference pairs: baselines, rules, signals and targets on hand-made scores."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from resources.preference.pairs import build_pairs, positive_share
from resources.training.trl_trainers import dpo_dataset


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


def candidates(prompts: int, per_prompt: int, seed: int = 0) -> pl.DataFrame:
    """Scored candidates: ``per_prompt`` samples for each prompt, varied influence and student loss."""
    rng = np.random.default_rng(seed)
    n = prompts * per_prompt
    return pl.DataFrame({
        "prompt_id": [f"p{i // per_prompt}" for i in range(n)],
        "prompt": [f"prompt {i // per_prompt}" for i in range(n)],
        "candidate_id": [f"c{i:03d}" for i in range(n)], "instruction": [f"instruction {i}" for i in range(n)],
        "raw_output": [f"A reason.</instruction> raw {i}" for i in range(n)],
        "loss_before": [2.0] * n, "loss_null_step": [1.9] * n, "loss_after": rng.normal(1.9, 0.05, n).tolist(),
        "candidate_loss": rng.uniform(1.0, 3.0, n).tolist(),
    })


def per_prompt(pairs: pl.DataFrame) -> dict[str, int]:
    return dict(pairs.group_by("prompt_id").len().iter_rows())


@pytest.mark.parametrize("rule", ["sign", "rank"])
def test_random_signal_keeps_prompts_and_counts_of_influence(rule: str) -> None:
    table = candidates(prompts=8, per_prompt=6)
    influence = build_pairs(table, "null_step", rule)
    assert influence.height > 0
    for seed in (0, 1, 2):
        random_pairs = build_pairs(table, "null_step", rule, signal="random", seed=seed)
        assert per_prompt(random_pairs) == per_prompt(influence)
        assert sorted(random_pairs["margin"]) == pytest.approx(sorted(influence["margin"]))
        assert set(random_pairs["signal"]) == {"random"} and set(influence["signal"]) == {"influence"}


def test_random_signal_is_reproducible_per_seed_and_differs_across_seeds() -> None:
    table = candidates(prompts=8, per_prompt=6)
    ids = lambda pairs: list(pairs.select("chosen_id", "rejected_id").iter_rows())  # noqa: E731
    first, again = (build_pairs(table, "null_step", "rank", signal="random", seed=7) for _ in range(2))
    assert ids(first) == ids(again)
    shuffled = build_pairs(table.sample(fraction=1.0, shuffle=True, seed=3), "null_step", "rank", signal="random",
                           seed=7)
    assert ids(shuffled) == ids(first), "the row order of the table must not change the random pairs"
    other = build_pairs(table, "null_step", "rank", signal="random", seed=8)
    assert ids(other) != ids(first)
    assert ids(first) != ids(build_pairs(table, "null_step", "rank"))


def test_student_loss_prefers_the_higher_loss_within_each_prompt() -> None:
    table = candidates(prompts=5, per_prompt=4)
    loss = dict(zip(table["candidate_id"], table["candidate_loss"], strict=True))
    ranked = build_pairs(table, "null_step", "rank", signal="student_loss")
    assert per_prompt(ranked) == dict.fromkeys(table["prompt_id"].unique(), 4)  # 2 above the median x 2 below
    assert all(loss[c] > loss[r] for c, r in ranked.select("chosen_id", "rejected_id").iter_rows())
    mean = table["candidate_loss"].mean()
    signed = build_pairs(table, "null_step", "sign", signal="student_loss")
    assert all(loss[c] > mean > loss[r] for c, r in signed.select("chosen_id", "rejected_id").iter_rows())
    assert signed["margin"].to_list() == pytest.approx(
        [loss[c] - loss[r] for c, r in signed.select("chosen_id", "rejected_id").iter_rows()])
    with pytest.raises(ValueError, match="candidate_loss"):
        build_pairs(table.drop("candidate_loss"), "null_step", "rank", signal="student_loss")
    with pytest.raises(ValueError, match="signal"):
        build_pairs(table, "null_step", "rank", signal="vibes")


def test_target_picks_the_text_and_dpo_formats_it() -> None:
    table = candidates(prompts=2, per_prompt=4)
    raw = build_pairs(table, "null_step", "rank", target="raw_output")
    parsed = build_pairs(table, "null_step", "rank")
    assert raw.select("chosen_id", "rejected_id").equals(parsed.select("chosen_id", "rejected_id"))
    assert raw["chosen"].str.starts_with("A reason.").all() and set(raw["target"]) == {"raw_output"}
    assert parsed["chosen"].str.starts_with("instruction").all() and set(parsed["target"]) == {"instruction"}
    raw_record, parsed_record = dpo_dataset(raw)[0], dpo_dataset(parsed)[0]
    assert raw_record["chosen"][0]["content"] == f"<instruction>{raw['chosen'][0]}"
    assert parsed_record["rejected"][0]["content"] == f"<instruction>{parsed['rejected'][0]}</instruction>"
    assert raw_record["prompt"] == [{"role": "user", "content": raw["prompt"][0]}]
    with pytest.raises(ValueError, match="raw_output"):
        build_pairs(table.drop("raw_output"), "null_step", "rank", target="raw_output")
    with pytest.raises(ValueError, match="target"):
        build_pairs(table, "null_step", "rank", target="reason")
