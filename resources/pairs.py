"""Preference pairs from influence scores.

Baselines (what an influence is measured against):
- ``before_step`` (the paper): ``L_ref(θ0) − L_ref(θ0 after a step on c)``.
- ``null_step``: ``L_ref(after a momentum-only step) − L_ref(after a step on c)``; removes the
  candidate-independent part of the update (carried-over momentum, weight decay) so that the sign
  reflects the candidate's own effect.

Rules (which samples of one synthesis prompt are chosen over which):
- ``sign``: every positive-score sample over every negative-score sample (the paper).
- ``rank``: every sample above the prompt's median score over every sample below it.
"""

from __future__ import annotations

import polars as pl

SCORE_EXPRESSIONS = {
    "before_step": pl.col("loss_before") - pl.col("loss_after"),
    "null_step": pl.col("loss_null_step") - pl.col("loss_after"),
}
PAIR_COLUMNS = [
    "prompt_id", "prompt", "chosen", "rejected", "chosen_id", "rejected_id",
    "chosen_score", "rejected_score", "margin",
]


def score_column(scores: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Add the ``score`` column that pairing uses, for the given baseline."""
    if baseline not in SCORE_EXPRESSIONS:
        raise ValueError(f"unknown influence baseline {baseline!r}; choose one of {sorted(SCORE_EXPRESSIONS)}")
    return scores.with_columns(score=SCORE_EXPRESSIONS[baseline])


def _sides(scored: pl.DataFrame, rule: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    if rule == "sign":
        return scored.filter(pl.col("score") > 0), scored.filter(pl.col("score") < 0)
    if rule == "rank":
        median = pl.col("score").median().over("prompt_id")
        return scored.filter(pl.col("score") > median), scored.filter(pl.col("score") < median)
    raise ValueError(f"unknown pairing rule {rule!r}; choose 'sign' or 'rank'")


def build_pairs(scores: pl.DataFrame, baseline: str, rule: str, min_margin: float = 0.0) -> pl.DataFrame:
    """All (chosen, rejected) pairs per prompt; ``scores`` needs prompt_id, prompt, candidate_id,
    instruction and the loss columns. Pairs with a margin below ``min_margin`` are dropped."""
    scored = score_column(scores, baseline)
    chosen, rejected = _sides(scored, rule)
    keep = ["prompt_id", "prompt", "candidate_id", "instruction", "score"]
    return (
        chosen.select(keep)
        .join(rejected.select(keep), on=["prompt_id", "prompt"], suffix="_rejected")
        .select(
            "prompt_id",
            "prompt",
            chosen=pl.col("instruction"),
            rejected=pl.col("instruction_rejected"),
            chosen_id=pl.col("candidate_id"),
            rejected_id=pl.col("candidate_id_rejected"),
            chosen_score=pl.col("score"),
            rejected_score=pl.col("score_rejected"),
            margin=pl.col("score") - pl.col("score_rejected"),
        )
        .filter((pl.col("margin") >= min_margin) & (pl.col("chosen") != pl.col("rejected")))
        .sort("prompt_id", "chosen_id", "rejected_id")
    )


def positive_share(scores: pl.DataFrame, baseline: str) -> float:
    """Share of candidates whose score under ``baseline`` is positive."""
    if scores.height == 0:
        return 0.0
    return float(score_column(scores, baseline)["score"].gt(0).mean())
