"""Preference pairs from a per-candidate preference signal.

Signals (what says which of a prompt's samples is better; ``pairs.signal``):
- ``influence`` (the paper): the candidate's local data influence on the reference loss, against a
  baseline (below).
- ``random`` (control): the same prompts and the same number of pairs per prompt as ``influence``,
  but which samples are chosen and which rejected is random: each prompt's influence scores are
  permuted among its samples (seeded per prompt) before the rule is applied. The permutation keeps
  every prompt's multiset of scores, so the rule picks as many chosen and rejected samples with the
  same margins; only *which* samples they are is random. Kept samples of one prompt never share a
  text (near-duplicate filter), so no permuted pair is dropped as identical and the count per prompt
  equals influence's exactly.
- ``student_loss`` (the paper's "training loss" ablation): the warm student's own mean answer-token
  loss on the candidate (column ``candidate_loss``), *higher preferred*: the signal says "teach what
  the student has not learned yet", the hard-example reading of a loss signal (loss-prioritized
  sampling). Neither the official code (which has no implementation of this ablation) nor the paper
  text we could read fixes the direction, so this is our choice; it also makes the control different
  from a cheap imitation of influence, which on the demo correlated −0.51 with this loss (influence
  favours low-loss candidates). Its score is the loss minus the mean loss of all candidates in the
  table, so under the ``sign`` rule "harder than the average candidate" beats "easier than average".

Baselines of the influence signal (what an influence is measured against):
- ``before_step`` (the paper): ``L_ref(θ0) − L_ref(θ0 after a step on c)``.
- ``null_step``: ``L_ref(after a momentum-only step) − L_ref(after a step on c)``; removes the
  candidate-independent part of the update (carried-over momentum, weight decay) so that the sign
  reflects the candidate's own effect.

Rules (which samples of one synthesis prompt are chosen over which):
- ``sign``: every positive-score sample over every negative-score sample (the paper).
- ``rank``: every sample above the prompt's median score over every sample below it. For every signal
  this gives the same pairs count per prompt (half of the samples over the other half), which makes
  signals comparable like for like.

Targets (which text of a sample is chosen/rejected; ``pairs.target``): ``instruction``, the parsed
instruction (DPO completes the prompt with it re-tagged), or ``raw_output``, the teacher's output as it
was sampled (as the official code: its reason and tags included).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

SIGNALS = ("influence", "random", "student_loss")
TARGETS = ("instruction", "raw_output")
SCORE_EXPRESSIONS = {
    "before_step": pl.col("loss_before") - pl.col("loss_after"),
    "null_step": pl.col("loss_null_step") - pl.col("loss_after"),
}
PAIR_COLUMNS = [
    "prompt_id", "prompt", "chosen", "rejected", "chosen_id", "rejected_id",
    "chosen_score", "rejected_score", "margin", "signal", "target",
]


def score_column(scores: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Add the ``score`` column of the influence signal, for the given baseline."""
    if baseline not in SCORE_EXPRESSIONS:
        raise ValueError(f"unknown influence baseline {baseline!r}; choose one of {sorted(SCORE_EXPRESSIONS)}")
    return scores.with_columns(score=SCORE_EXPRESSIONS[baseline])


def _prompt_rng(seed: int, prompt_id: str) -> np.random.Generator:
    """A random generator for one prompt: the same for a (seed, prompt) whatever else is in the table."""
    digest = int.from_bytes(hashlib.sha256(prompt_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def permute_within_prompts(scored: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Shuffle the ``score`` column among the samples of each prompt (seeded per prompt; the result does
    not depend on the table's row order)."""
    if scored.height == 0:
        return scored
    canonical = scored.with_row_index("_row").sort("prompt_id", "candidate_id")
    parts = [
        group.with_columns(score=pl.Series(_prompt_rng(seed, prompt_id).permutation(group["score"].to_numpy())))
        for (prompt_id,), group in canonical.group_by("prompt_id", maintain_order=True)
    ]
    return pl.concat(parts).sort("_row").drop("_row")


def signal_scores(scores: pl.DataFrame, signal: str, baseline: str, seed: int = 0) -> pl.DataFrame:
    """Add the ``score`` column that pairing uses: higher means preferred under ``signal``."""
    if signal == "influence":
        return score_column(scores, baseline)
    if signal == "random":
        return permute_within_prompts(score_column(scores, baseline), seed)
    if signal == "student_loss":
        if "candidate_loss" not in scores.columns:
            raise ValueError("signal 'student_loss' needs a candidate_loss column (the warm student's loss)")
        return scores.with_columns(score=pl.col("candidate_loss") - pl.col("candidate_loss").mean())
    raise ValueError(f"unknown preference signal {signal!r}; choose one of {list(SIGNALS)}")


def _sides(scored: pl.DataFrame, rule: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    if rule == "sign":
        return scored.filter(pl.col("score") > 0), scored.filter(pl.col("score") < 0)
    if rule == "rank":
        median = pl.col("score").median().over("prompt_id")
        return scored.filter(pl.col("score") > median), scored.filter(pl.col("score") < median)
    raise ValueError(f"unknown pairing rule {rule!r}; choose 'sign' or 'rank'")


def build_pairs(
    scores: pl.DataFrame,
    baseline: str,
    rule: str,
    min_margin: float = 0.0,
    signal: str = "influence",
    target: str = "instruction",
    seed: int = 0,
) -> pl.DataFrame:
    """All (chosen, rejected) pairs per prompt under ``signal`` and ``rule``; ``scores`` needs prompt_id,
    prompt, candidate_id, the ``target`` text column and the signal's columns (the loss columns for
    influence and random, candidate_loss for student_loss). ``seed`` drives the random signal. Pairs with a
    margin below ``min_margin`` (in the signal's score units) or identical texts are dropped."""
    if target not in TARGETS:
        raise ValueError(f"unknown pair target {target!r}; choose one of {list(TARGETS)}")
    if target not in scores.columns:
        raise ValueError(f"pairs.target {target!r} needs a {target!r} column in the scored candidates")
    scored = signal_scores(scores, signal, baseline, seed)
    chosen, rejected = _sides(scored, rule)
    keep = ["prompt_id", "prompt", "candidate_id", target, "score"]
    return (
        chosen.select(keep)
        .join(rejected.select(keep), on=["prompt_id", "prompt"], suffix="_rejected")
        .select(
            "prompt_id",
            "prompt",
            chosen=pl.col(target),
            rejected=pl.col(f"{target}_rejected"),
            chosen_id=pl.col("candidate_id"),
            rejected_id=pl.col("candidate_id_rejected"),
            chosen_score=pl.col("score"),
            rejected_score=pl.col("score_rejected"),
            margin=pl.col("score") - pl.col("score_rejected"),
            signal=pl.lit(signal),
            target=pl.lit(target),
        )
        .filter((pl.col("margin") >= min_margin) & (pl.col("chosen") != pl.col("rejected")))
        .sort("prompt_id", "chosen_id", "rejected_id")
        .select(PAIR_COLUMNS)
    )


def positive_share(scores: pl.DataFrame, baseline: str) -> float:
    """Share of candidates whose score under ``baseline`` is positive."""
    if scores.height == 0:
        return 0.0
    return float(score_column(scores, baseline)["score"].gt(0).mean())
