"""ROUGE-L near-duplicate removal: our engine vs the straightforward pairwise rouge_score loop.

Run: python benchmarks/dedup.py [--n 2000]. The baseline is measured in the same run; decisions must
be identical. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence

from rouge_score import rouge_scorer

from resources.text import dedup_rouge_l

SUBJECTS = ["the water cycle", "photosynthesis", "a binary search", "the French revolution", "compound interest",
            "a haiku", "climate change", "a healthy breakfast", "the stock market", "a job interview", "volcanoes",
            "machine learning", "a birthday party", "the moon landing", "recycling", "a python list", "gravity"]
VERBS = ["Explain", "Describe", "Summarize", "Write a short poem about", "List three facts about",
         "Give advice on", "Compare two views on", "Write a story involving", "Teach a child about"]
TAILS = ["", " in simple words", " for a beginner", " in two sentences", " using an example", " step by step",
         " with a funny twist", " for a school newsletter"]


def make_instructions(n: int, seed: int = 0) -> list[str]:
    """Deterministic instructions from templates; a realistic share are near-duplicates."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)}{rng.choice(TAILS)}".split()
        extra = rng.sample(["please", "briefly", "clearly", "today", "now", "again", "carefully"], rng.randint(0, 3))
        for word in extra:
            words.insert(rng.randrange(1, len(words) + 1), word)
        texts.append(" ".join(words) + ".")
    return texts


def naive(texts: list[str], threshold: float, existing: Sequence[str] = ()) -> list[bool]:
    """The straightforward loop: every candidate against every kept text with rouge_score."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept = list(existing)
    flags = []
    for text in texts:
        keep = all(scorer.score(other, text)["rougeL"].fmeasure <= threshold for other in kept)
        flags.append(keep)
        if keep:
            kept.append(text)
    return flags


def main() -> int:
    """Time both, compare decisions, print the ratio and a JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args()
    texts = make_instructions(args.n)
    started = time.perf_counter()
    fast = dedup_rouge_l(texts, args.threshold)
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    baseline = naive(texts, args.threshold)
    baseline_s = time.perf_counter() - started
    identical = fast == baseline
    print(f"{args.n} instructions, {sum(fast)} kept; rouge_score loop {baseline_s:.2f} s, ours {fast_s:.3f} s, "
          f"speedup {baseline_s / fast_s:.0f}x, identical decisions: {identical}")
    print(json.dumps({"n": args.n, "kept": sum(fast), "baseline_s": round(baseline_s, 3), "fast_s": round(fast_s, 4),
                      "speedup": round(baseline_s / fast_s, 1), "identical": identical}))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
