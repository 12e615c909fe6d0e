"""The effect experiment's diagnostics on a tiny model and small tables: each measure moves the way it claims."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from resources.experiment.diagnostics import (
    TeacherLogprobShift,
    dpo_summary,
    score_correlations,
    spearman,
    split_half_reliability,
)
from resources.models import load_causal_lm, resolve_model_source
from resources.training.encoding import encode_pairs
from resources.training.trl_trainers import teacher_completion

MESSAGES = ["Write one question about numbers.", "Write a short task about colours.", "Ask something about cats."]
INSTRUCTIONS = ["How many legs do two cats have?", "Name three warm colours.", "Why do cats purr?"]


def test_teacher_logprob_shift_is_zero_for_the_same_teacher_and_positive_after_learning_its_texts(
    tmp_path: Path, model_cache: Path
) -> None:
    untuned = resolve_model_source("tiny-random:diagnostics-teacher", model_cache)
    cpu = torch.device("cpu")
    shift = TeacherLogprobShift(untuned, MESSAGES, INSTRUCTIONS, cpu, torch.float32, 128)
    assert shift(untuned) == 0.0

    model, tokenizer = load_causal_lm(untuned, cpu, torch.float32)
    turns = [teacher_completion(text, "instruction") for text in INSTRUCTIONS]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for example in encode_pairs(tokenizer, MESSAGES, turns, 128) * 3:  # raise the texts' likelihood
        loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned = tmp_path / "tuned"
    model.save_pretrained(tuned)
    tokenizer.save_pretrained(tuned)
    assert shift(str(tuned)) > 0.01


def _scores_by_halves(first: pl.DataFrame, second: pl.DataFrame) -> list[list[float]]:
    return [_scores_by_half(first), _scores_by_half(second)]


def _scores_by_half(reference: pl.DataFrame) -> list[float]:
    """Five candidates scored against a reference half: a fixed ranking plus a part that depends on the half."""
    tilt = float(reference["weight"].sum())
    return [base + tilt * noise for base, noise in zip([5, 4, 3, 2, 1], [0, 3, -3, 1, -1], strict=True)]


def test_split_half_reliability_follows_how_much_the_ranking_depends_on_the_half() -> None:
    steady = pl.DataFrame({"weight": [0.0] * 8})
    assert split_half_reliability(_scores_by_halves, steady, seed=1) == {
        "split_half_spearman": pytest.approx(1.0), "split_half_reliability": pytest.approx(1.0)}
    uneven = pl.DataFrame({"weight": [0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0]})
    values = [split_half_reliability(_scores_by_halves, uneven, seed=s)["split_half_spearman"] for s in range(10)]
    assert min(values) < 1.0, "halves with different weights rank the candidates differently"
    with pytest.raises(ValueError, match="at least 4 reference examples"):
        split_half_reliability(_scores_by_halves, steady.head(3), seed=1)


def test_score_correlations_and_spearman() -> None:
    scores = pl.DataFrame({"influence": [0.3, 0.1, 0.2, 0.4], "candidate_loss": [3.0, 1.0, 2.0, 4.0],
                           "response": ["a b c", "a", "a b c d e", "a b"]})
    correlations = score_correlations(scores, str.split)
    assert correlations["influence_vs_own_loss"] == pytest.approx(1.0)
    assert correlations["influence_vs_response_tokens"] == pytest.approx(spearman([0.3, 0.1, 0.2, 0.4], [3, 1, 5, 2]))
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))
    with pytest.raises(ValueError, match="lengths 2 and 3"):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])


def test_dpo_summary_averages_the_last_epoch() -> None:
    history = [{"loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.0, "epoch": 0.5},
               {"loss": 0.68, "rewards/margins": 0.1, "rewards/accuracies": 0.5, "epoch": 1.0},
               {"loss": 0.60, "rewards/margins": 0.3, "rewards/accuracies": 1.0, "epoch": 1.5},
               {"loss": 0.55, "rewards/margins": 0.5, "rewards/accuracies": 1.0, "epoch": 2.0},
               {"train_runtime": 3.0, "epoch": 2.0}]
    summary = dpo_summary(json.dumps(history))
    assert summary == {"dpo_last_epoch_margin": pytest.approx(0.4), "dpo_last_epoch_accuracy": pytest.approx(1.0)}
    assert all(math.isnan(v) for v in dpo_summary("[]").values())
