"""Why a tuned teacher may not teach better: diagnostics of the effect experiment.

Three questions, each answered by a number per replicate:

- **Does the teacher move?** :class:`TeacherLogprobShift`: the mean per-token change in log-probability, tuned
  minus untuned, of what the untuned teacher wrote on held prompts (prompts DPO never saw). Its negative
  estimates KL(untuned || tuned) per token (exactly so for texts sampled from the untuned teacher at
  temperature 1; the instructions here were sampled with top-p 0.9, so it is an approximation). Beside it, the
  share of final instructions identical to the untuned teacher's (computed by the experiment) and the DPO
  trainer's reward margin and accuracy over its last epoch (:func:`dpo_summary`).
- **Is the signal consistent?** :func:`split_half_reliability`: the candidates scored against two random
  halves of the reference set; the Spearman correlation between the halves and its Spearman-Brown estimate for
  the whole set. A low value means the ranking the teacher is taught is mostly noise.
- **What does it track?** :func:`score_correlations`: Spearman of the influence score with the candidate's
  response length in tokens and with the warm student's own loss on it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

import polars as pl
import torch
from scipy.stats import spearmanr

from resources.models import load_causal_lm, load_tokenizer
from resources.training.encoding import MeanLoss, encode_pairs
from resources.training.trl_trainers import teacher_completion


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences (nan when one is constant or too short)."""
    if len(a) != len(b):
        raise ValueError(f"cannot correlate sequences of lengths {len(a)} and {len(b)}")
    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


class TeacherLogprobShift:
    """Mean per-token log-probability of fixed ``instructions`` (as the teacher's tagged assistant turn after each
    user ``message``) under a tuned teacher minus under the untuned one at ``untuned_folder``; 0 when the teacher
    did not move. The untuned teacher's loss is computed once, here; call the object with each tuned folder."""

    def __init__(
        self,
        untuned_folder: str,
        messages: list[str],
        instructions: list[str],
        device: torch.device,
        dtype: torch.dtype,
        max_length: int,
        batch_size: int = 8,
    ) -> None:
        tokenizer = load_tokenizer(untuned_folder)
        turns = [teacher_completion(text, "instruction") for text in instructions]
        examples = encode_pairs(tokenizer, messages, turns, max_length)
        self.loss = MeanLoss(examples, tokenizer.pad_token_id, batch_size, "the held prompts' instructions")
        self.device, self.dtype = device, dtype
        self.untuned_loss = self._loss_under(untuned_folder)

    def _loss_under(self, folder: str) -> float:
        model, _ = load_causal_lm(folder, self.device, self.dtype)
        return self.loss(model.eval())

    def __call__(self, tuned_folder: str) -> float:
        """The shift of the teacher at ``tuned_folder``."""
        return self.untuned_loss - self._loss_under(tuned_folder)


def split_half_reliability(
    score_halves: Callable[[pl.DataFrame, pl.DataFrame], Sequence[Sequence[float]]], reference: pl.DataFrame,
    seed: int,
) -> dict[str, float]:
    """Score the same candidates against two random halves of ``reference`` (``score_halves(first, second)``
    returns one list of scores per half, one score per candidate in a fixed order); the halves' Spearman
    correlation and its Spearman-Brown estimate ``2r / (1 + r)`` for the whole reference set."""
    if reference.height < 4:
        raise ValueError(f"split-half reliability needs at least 4 reference examples, got {reference.height}")
    order = random.Random(seed).sample(range(reference.height), reference.height)
    middle = reference.height // 2
    first, second = score_halves(reference[order[:middle]], reference[order[middle:]])
    r = spearman(first, second)
    return {"split_half_spearman": r, "split_half_reliability": 2 * r / (1 + r) if r > -1 else float("nan")}


def score_correlations(scores: pl.DataFrame, tokenizer: Callable[[str], list[int]]) -> dict[str, float]:
    """Spearman of the ``influence`` column with the response's token count and with ``candidate_loss`` (the warm
    student's own loss on the candidate)."""
    lengths = [len(tokenizer(text)) for text in scores["response"].to_list()]
    influence = scores["influence"].to_list()
    return {"influence_vs_response_tokens": spearman(influence, lengths),
            "influence_vs_own_loss": spearman(influence, scores["candidate_loss"].to_list())}


def dpo_summary(history_json: str) -> dict[str, float]:
    """The DPO trainer's reward margin and accuracy (TRL's ``rewards/*``) averaged over the steps logged in its
    last epoch, from a teacher checkpoint's ``dpo_history``; nan when nothing was logged."""
    logged = [entry for entry in json.loads(history_json or "[]") if "rewards/margins" in entry]
    if not logged:
        return {"dpo_last_epoch_margin": float("nan"), "dpo_last_epoch_accuracy": float("nan")}
    final = max(entry.get("epoch", 0.0) for entry in logged)
    last_epoch = [entry for entry in logged if entry.get("epoch", 0.0) > final - 1.0]
    return {f"dpo_last_epoch_{name}": sum(entry[f"rewards/{key}"] for entry in last_epoch) / len(last_epoch)
            for name, key in (("margin", "margins"), ("accuracy", "accuracies"))}
