"""ROUGE-L near-duplicate removal: ``resources.synthesis.text_filters.dedup_rouge_l`` vs the pairwise rouge_score loop.

Run from the repository root: ``python benchmarks/dedup.py [--n 2000] [--threshold 0.7]``. The baseline
is measured in full in the same run, decisions must be identical (exit status 1 otherwise), and the last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence

from rouge_score import rouge_scorer

from resources.synthesis.text_filters import dedup_rouge_l

FRAMES = [
    "{verb} {a} {n} {prep} {a2} {n2} for {who} {how}.",
    "{verb} how {a} {n} shapes {n2} in {place} {how}.",
    "Why do {who} in {place} {feel} {a} {n}? {verb} {n2} {how}.",
    "{verb} {a} {n} and {a2} {n2} for {who} in {place}.",
    "As {who}, {verb} {a} {n} {prep} {n2} {how}.",
]
VERBS = [
    "explain", "describe", "summarize", "write a poem about", "list facts about", "give advice on",
    "compare views on", "write a story about", "teach", "draft an email about", "create a quiz on",
    "outline a lesson on", "argue about", "critique", "suggest questions about", "define", "predict",
    "plan a budget for", "rank", "classify", "brainstorm names for", "translate jargon about",
]  # fmt: skip
FEELINGS = ["love", "fear", "ignore", "misunderstand", "debate", "underrate", "romanticize", "distrust"]
PREPOSITIONS = ["versus", "with", "without", "through", "beyond", "after", "inside", "against", "near"]
ADJECTIVES = [
    "cheap", "modern", "ancient", "local", "seasonal", "digital", "rural", "urban", "healthy", "risky",
    "organic", "portable", "shared", "quiet", "noisy", "popular", "rare", "traditional", "experimental",
    "fair", "sustainable", "efficient", "creative", "safe", "global", "tiny", "huge", "fragile", "electric",
    "wooden", "frozen", "spicy", "hidden", "famous", "strange", "secret", "public", "private", "colorful",
]  # fmt: skip
NOUNS = [
    "photosynthesis", "gardening", "recycling", "budgeting", "chess", "volcanoes", "honeybees", "vaccines",
    "tourism", "bicycles", "libraries", "podcasts", "tea", "coffee", "sleep", "cooking", "poetry", "jazz",
    "robotics", "batteries", "forests", "rivers", "tides", "markets", "taxes", "elections", "museums",
    "bridges", "trains", "spices", "bread", "cheese", "dancing", "painting", "origami", "astronomy",
    "geology", "bacteria", "insurance", "mortgages", "fishing", "camping", "kites", "lighthouses",
    "newspapers", "umbrellas", "mushrooms", "volunteering", "chemistry", "typography", "calendars",
    "furniture", "glaciers", "satellites", "pottery", "lullabies", "sneakers", "wetlands", "comets",
    "ferries", "orchards", "submarines", "thermostats", "violins", "recipes", "deserts", "passwords",
    "algorithms", "tournaments", "wildfires", "monsoons", "pigeons", "skyscrapers", "puzzles",
]  # fmt: skip
PLACES = [
    "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Toronto", "Cairo", "Sydney", "Denver", "Seoul", "Dublin",
    "Quito", "Mumbai", "Tunis", "Riga", "Accra", "Perth", "Austin", "Kyoto", "Havana", "Bergen", "Malta",
    "Iceland", "Patagonia", "Bavaria", "Alaska", "Siberia", "Texas",
]  # fmt: skip
WHO = [
    "a beginner", "a ten year old", "a busy manager", "retired teachers", "a high school class",
    "a skeptical reader", "nurses", "farmers", "software engineers", "new parents", "tourists",
    "librarians", "pilots", "chefs", "city planners", "athletes",
]  # fmt: skip
HOW = [
    "in simple words", "in two sentences", "using one concrete example", "step by step",
    "with a funny twist", "in under fifty words", "without jargon", "as a numbered list",
]  # fmt: skip
FILLERS = ["please", "briefly", "clearly", "also", "really", "carefully", "quickly", "new", "good", "main"]


def fresh_instruction(rng: random.Random) -> str:
    """One instruction from a random frame and vocabulary."""
    (a, a2), (n, n2) = rng.sample(ADJECTIVES, 2), rng.sample(NOUNS, 2)
    text = rng.choice(FRAMES).format(
        verb=rng.choice(VERBS), a=a, a2=a2, n=n, n2=n2, who=rng.choice(WHO), how=rng.choice(HOW),
        place=rng.choice(PLACES), feel=rng.choice(FEELINGS), prep=rng.choice(PREPOSITIONS),
    )  # fmt: skip
    return text[0].upper() + text[1:]


def perturb(rng: random.Random, text: str) -> str:
    """A paraphrase-like variant of an earlier instruction: a few words inserted, replaced or dropped."""
    words = text.rstrip(".?!").split()
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(1, len(words))
        action = rng.random()
        if action < 0.4:
            words.insert(position, rng.choice(FILLERS))
        elif action < 0.8:
            words[position] = rng.choice(FILLERS + rng.choice(NOUNS).split())
        elif len(words) > 4:
            del words[position]
    return " ".join(words) + rng.choice([".", "?", "!"])


def make_instructions(n: int, seed: int = 0, revisit: float = 0.15) -> list[str]:
    """Deterministic instructions: fresh template draws, and with probability ``revisit`` a variant of an
    earlier one (some land above the ROUGE-L threshold, some just below)."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(n):
        reuse = texts and rng.random() < revisit
        texts.append(perturb(rng, rng.choice(texts)) if reuse else fresh_instruction(rng))
    return texts


def naive(texts: Sequence[str], threshold: float, existing: Sequence[str] = ()) -> list[bool]:
    """The straightforward loop: each candidate against each kept text with rouge_score."""
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
    """Time both on the same instructions, compare decisions, print a summary and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    speedup = baseline_s / fast_s
    dropped = 1 - sum(fast) / args.n
    print(f"{args.n} instructions, {sum(fast)} kept ({dropped:.0%} dropped) at ROUGE-L > {args.threshold}")
    print(f"rouge_score pairwise loop: {baseline_s:.2f} s; text_filters.dedup_rouge_l: {fast_s:.4f} s")
    print(f"speedup {speedup:.0f}x; identical decisions: {identical}")
    result = {
        "speedup": round(speedup, 1), "identical": identical, "n": args.n,
        "baseline_s": round(baseline_s, 3), "fast_s": round(fast_s, 4), "kept": sum(fast),
    }  # fmt: skip
    print(json.dumps(result))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
