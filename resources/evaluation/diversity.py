"""Diversity of a set of instructions, so a collapse toward one narrow style after DPO is visible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from resources.synthesis.text_filters import pairwise_rouge_l, rouge_tokens


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (rouge tokens); 0 when there are none."""
    grams = [tuple(tokens[i : i + n]) for tokens in map(rouge_tokens, texts) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_pairwise_rouge_l(texts: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over all pairs of different texts (higher = more alike); 0 for fewer than 2 texts."""
    if len(texts) < 2:
        return 0.0
    scores = pairwise_rouge_l(texts)
    return float(scores[np.triu_indices(len(texts), k=1)].mean())


def diversity_stats(texts: Sequence[str]) -> dict[str, float]:
    """distinct-1/2, mean pairwise ROUGE-L and the word-length distribution of ``texts``."""
    lengths = np.array([len(rouge_tokens(text)) for text in texts] or [0])
    return {
        "count": len(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "mean_pairwise_rouge_l": mean_pairwise_rouge_l(texts),
        "mean_words": float(lengths.mean()),
        "p10_words": float(np.percentile(lengths, 10)),
        "p90_words": float(np.percentile(lengths, 90)),
    }


def diversity_drop(before: dict[str, float], after: dict[str, float]) -> float:
    """Relative fall of distinct-2 from ``before`` to ``after`` (0 when it did not fall)."""
    if before["distinct_2"] == 0:
        return 0.0
    return max(0.0, 1 - after["distinct_2"] / before["distinct_2"])


def shared_texts(first: Sequence[str], second: Sequence[str]) -> int:
    """How many distinct texts of ``first`` also appear in ``second``."""
    return len(set(first) & set(second))
