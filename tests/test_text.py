"""Parsing, filters and ROUGE-L dedup on hand-written (and some generated) cases."""

from __future__ import annotations

import random

import pytest

from benchmarks.dedup import naive
from resources.text import dedup_rouge_l, dedup_rouge_l_detailed, filter_verdict, parse_instruction


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Write a poem about rain.</instruction>", "Write a poem about rain."),
        ("Write a poem about rain.", "Write a poem about rain."),
        ("  Write a poem\n\n about   rain. </instruction> extra text", "Write a poem about rain."),
        ("Sure! <instruction>List three fruits.</instruction><instruction>Other</instruction>", "List three fruits."),
        ("First one.</instruction>\n<instruction>Second one.</instruction>", "First one."),
        ("Explain tides.<|im_end|>junk", "Explain tides."),
        ("Explain tides. <instruction> a second start", "Explain tides."),
        ("", None),
        ("   </instruction>", None),
    ],
)
def test_parse_instruction(raw: str, expected: str | None) -> None:
    assert parse_instruction(raw) == expected


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        (None, "unparsed"),
        ("Explain why the sky is blue.", "ok"),
        ("Explain the \u201cblue\u201d sky to a child.", "non_ascii"),
        ("- Explain why the sky is blue.", "leading_punctuation"),
        ("\"Explain\" why the sky is blue.", "leading_punctuation"),
        ("Explain the blue sky.", "too_short"),
        ("one two three four five", "ok"),
        (" ".join(["word"] * 400), "ok"),
        (" ".join(["word"] * 401), "too_long"),
        ("Describe a map of your town.", "unsupported_task"),
        ("Draw a cat using only words please.", "unsupported_task"),
        ("Go to the website and summarize it.", "unsupported_task"),
        ("Explain the mapping of keys to values in a dictionary.", "ok"),
        ("Explain what a user profile holds in an app.", "ok"),
    ],
)
def test_filter_verdict(text: str | None, verdict: str) -> None:
    assert filter_verdict(text) == verdict


def test_dedup_hand_written() -> None:
    texts = [
        "Write a short poem about the sea.",
        "Write a short poem about the sea.",                 # exact duplicate
        "Write a short poem about the ocean.",               # 6/7 tokens shared: F1 0.857 > 0.7
        "Write a long story about a dragon and a knight.",   # different
        "Write a poem.",                                     # F1 vs first = 2*3/(4+7)=0.545: kept
        "",                                                  # no tokens: scores 0, kept
    ]
    verdicts = dedup_rouge_l_detailed(texts, 0.7)
    assert [v.keep for v in verdicts] == [True, False, False, True, True, True]
    assert verdicts[1].max_rouge == 1.0 and verdicts[1].matched_index == 0
    assert [v.keep for v in verdicts] == naive(texts, 0.7)


def test_dedup_threshold_is_strict_and_existing_counts() -> None:
    a, b = "one two three four five six seven", "one two three four five eight nine ten"
    f1 = 2 * (5 / 7) * (5 / 8) / (5 / 7 + 5 / 8)
    assert dedup_rouge_l([a, b], threshold=f1) == [True, True]
    assert dedup_rouge_l([a, b], threshold=f1 - 1e-9) == [True, False]
    assert dedup_rouge_l([b], threshold=0.5, existing=[a]) == [False]


def test_dedup_matches_rouge_score_on_generated_near_duplicates() -> None:
    rng = random.Random(0)
    vocab = ["write", "explain", "list", "give", "the", "a", "of", "to", "short", "poem", "story", "about",
             "sea", "city", "tree", "why", "how", "three"]
    base = [[rng.choice(vocab) for _ in range(rng.randint(3, 12))] for _ in range(40)]
    texts = []
    for _ in range(300):
        words = list(rng.choice(base))
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocab))
        texts.append(" ".join(words).capitalize() + rng.choice([".", "?", ""]))
    for threshold in (0.5, 0.7, 0.9):
        fast = dedup_rouge_l(texts, threshold, existing=texts[:5])
        assert fast == naive(texts, threshold, existing=texts[:5])
        assert 0 < sum(fast) < len(texts)
