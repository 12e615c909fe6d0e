"""Parsing, filters and ROUGE-L dedup of ``resources.synthesis.text_filters`` on hand-written and generated cases."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

import resources.synthesis.text_filters as text_module
from benchmarks.dedup import make_instructions, naive
from resources.synthesis.text_filters import (
    DedupVerdict,
    dedup_rouge_l,
    dedup_rouge_l_detailed,
    filter_verdict,
    official_filter,
    parse_instruction,
    parse_last_instruction,
    rouge_tokens,
    unicode_tokens,
)

KOREAN = "한국의 전통 음식 세 가지를 소개하고 각각의 특징을 설명해 주세요."
GERMAN = "Erklären Sie den Unterschied zwischen einer Straße und einer größeren Allee."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Write a poem about rain.</instruction>", "Write a poem about rain."),
        (
            "Write a poem about rain.</instruction>\n<response>Rain falls.</response>",
            "Write a poem about rain.",
        ),
        ("Write a poem about rain.", "Write a poem about rain."),
        ("  Write a poem\n\n about \t  rain. \n</instruction> extra text", "Write a poem about rain."),
        (
            "\n<instruction>List three fruits.</instruction><instruction>Other</instruction>",
            "List three fruits.",
        ),
        ("Sure! <instruction> List  three\nfruits. </instruction>", "List three fruits."),
        ("First one.</instruction>\n<instruction>Second one.</instruction>", "First one."),
        ("Explain tides.<|im_end|>junk", "Explain tides."),
        ("Explain tides.<|im_end|><instruction>Not this.</instruction>", "Explain tides."),
        ("Explain tides. <instruction> a second start", "Explain tides."),
        ("", None),
        ("   \n ", None),
        ("   </instruction>", None),
        ("<|im_end|>", None),
        ("<instruction></instruction>Later text", None),
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
        ("\u00bfExplain why the sky is blue?", "non_ascii"),  # non-ASCII is checked before punctuation
        ("- Explain why the sky is blue.", "leading_punctuation"),
        ('"Explain" why the sky is blue.', "leading_punctuation"),
        ("1. Explain why the sky is blue.", "ok"),
        ("!", "leading_punctuation"),  # punctuation is checked before length
        ("", "too_short"),
        ("Explain the blue sky.", "too_short"),
        ("one two three four five", "ok"),
        (" ".join(["word"] * 400), "ok"),
        (" ".join(["word"] * 401), "too_long"),
        ("Describe a map of your town.", "unsupported_task"),
        ("Describe a MAP of your town.", "unsupported_task"),
        ("Explain how map-reduce splits the work.", "unsupported_task"),
        ("Draw a cat using only words please.", "unsupported_task"),
        ("Go to the website and summarize it.", "unsupported_task"),
        ("Describe the images in the news today.", "unsupported_task"),
        ("Write a song about the music of the spheres.", "unsupported_task"),
        ("Explain the mapping of keys to values in a dictionary.", "ok"),
        ("Explain what a user profile holds in an app.", "ok"),
        ("Explain plotting twists in mystery novels briefly.", "ok"),
        ("Describe the drawing room of a Victorian house.", "ok"),
        ("Explain why people forgo tomatoes in winter.", "ok"),
    ],
)
def test_filter_verdict(text: str | None, verdict: str) -> None:
    assert filter_verdict(text) == verdict


def test_filter_word_bounds_are_parameters() -> None:
    assert filter_verdict("one two three", min_words=3, max_words=3) == "ok"
    assert filter_verdict("one two three four", min_words=3, max_words=3) == "too_long"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # reason first, then the tagged instruction: the last closed pair wins
        ("I chose this because it is useful.\n<instruction>Name three rivers.</instruction>", "Name three rivers."),
        ("<instruction>First.</instruction> then <instruction>  Second\n one. </instruction> tail", "Second one."),
        ("Reason.<instruction>Closed.</instruction><instruction>Never closed", "Closed."),
        # no closed pair: rejected, also when the text after an opening tag looks like an instruction
        ("<instruction>Name three rivers in Africa.", None),
        ("Name three rivers in Africa.</instruction>", None),
        ("Name three rivers in Africa.", None),
        ("", None),
        ("<instruction>   </instruction>", ""),  # closed but empty: the filters reject it
        # pairs are formed left to right: an unclosed opening tag's text runs to the next closing tag
        ("Use <instruction> tags: <instruction>Name a river.</instruction>", "tags: <instruction>Name a river."),
        ("<instruction>Explain tides.</instruction><|im_end|><instruction>Not this.</instruction>", "Explain tides."),
    ],
)
def test_parse_last_instruction(raw: str, expected: str | None) -> None:
    assert parse_last_instruction(raw) == expected


@pytest.mark.parametrize(
    ("text", "verdict", "cleaned"),
    [
        ("  Explain why\n the sky   is blue. ", "ok", "Explain why the sky is blue."),
        # str.capitalize, as in the reference: the rest of the text is lower-cased
        ("explain NASA's role in Apollo.", "ok", "Explain nasa's role in apollo."),
        # length in characters, after collapsing: at most 5 rejected, 6 kept; 400 kept, 401 rejected
        ("Hello", "too_short", "Hello"),
        ("  Ab \n cd ", "too_short", "Ab cd"),  # 5 characters once collapsed
        ("  Hel  lo ", "ok", "Hel lo"),
        ("Hello!", "ok", "Hello!"),
        ("", "too_short", ""),
        ("A" + "b" * 399, "ok", "A" + "b" * 399),
        ("A" + "b" * 400, "too_long", "A" + "b" * 400),
        (" ".join(["word"] * 80), "ok", "Word " + " ".join(["word"] * 79)),  # 399 characters, 80 words
        # the 13 official words, whole words, any case; Self-Instruct's extra five pass
        ("Describe a MAP of your town.", "unsupported_task", "Describe a map of your town."),
        ("Explain how map-reduce splits the work.", "unsupported_task", "Explain how map-reduce splits the work."),
        ("Please go to the store and list fruit.", "unsupported_task", "Please go to the store and list fruit."),
        ("Explain why people forgo tomatoes.", "ok", "Explain why people forgo tomatoes."),
        ("Plot the sales figures for me.", "unsupported_task", "Plot the sales figures for me."),
        ("Explain the mapping of keys to values.", "ok", "Explain the mapping of keys to values."),
        ("Explain plotting twists in novels.", "ok", "Explain plotting twists in novels."),
        ("Please go \n to the store.", "unsupported_task", "Please go to the store."),  # collapsed first
        ("Write a song about the music of the spheres.", "ok", "Write a song about the music of the spheres."),
        ("Describe this diagram in words.", "ok", "Describe this diagram in words."),
        # only the first character must be ASCII
        ("Explain the \u201cblue\u201d sky to a child.", "ok", "Explain the \u201cblue\u201d sky to a child."),
        ("\u00c9crivez un po\u00e8me.", "non_ascii_start", "\u00c9crivez un po\u00e8me."),
        ("\u00dfe is a German letter.", "ok", "Sse is a german letter."),  # capitalized before the check
        ("\u00bfExplain why the sky is blue?", "non_ascii_start", "\u00bfexplain why the sky is blue?"),
        ("- Explain why the sky is blue.", "leading_punctuation", "- explain why the sky is blue."),
        ("- Draw a cat.", "unsupported_task", "- draw a cat."),  # the blocklist is checked before punctuation
        # input tags go after the checks (length counts them); words around them can join, as in the reference
        ("Summarize this: <input>The cat sat on the mat.</input>", "ok", "Summarize this:the cat sat on the mat."),
        ("Sort these numbers:<input> 3, 1, 2 </input> please", "ok", "Sort these numbers: 3, 1, 2please"),
        ("Say hi<input></input>", "ok", "Say hi"),
        ("<input>Summarize the text.</input>", "leading_punctuation", "<input>summarize the text.</input>"),
    ],
)
def test_official_filter(text: str, verdict: str, cleaned: str) -> None:
    assert official_filter(text) == (verdict, cleaned)


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World! It's 2024...",
        "  spaced\tout\n",
        "caf\u00e9 na\u00efve \u0130stanbul",
        "a_b-c",
        "",
        "???",
    ],
)
def test_rouge_tokens_match_rouge_score(text: str) -> None:
    assert rouge_tokens(text) == rouge_scorer.RougeScorer(["rougeL"])._tokenizer.tokenize(text)


def test_script_option_keeps_non_english_text_that_the_ascii_rule_rejects() -> None:
    assert filter_verdict(KOREAN) == "non_ascii" and filter_verdict(GERMAN) == "non_ascii"
    assert official_filter(KOREAN) == ("non_ascii_start", KOREAN)
    assert official_filter(GERMAN)[0] == "ok"  # the official rule looks at the first character only
    assert filter_verdict(KOREAN, script="any") == "ok" and filter_verdict(GERMAN, script="any") == "ok"
    assert official_filter(KOREAN, "any") == ("ok", KOREAN)
    assert filter_verdict("짧은 글", script="any") == "too_short"  # the other rules still apply
    assert official_filter("「인용」으로 시작합니다", "any")[0] == "ok"  # CJK brackets are not ASCII punctuation
    assert official_filter("¿Qué hora es en Madrid ahora?", "ascii")[0] == "non_ascii_start"


def test_unicode_tokens() -> None:
    assert unicode_tokens(GERMAN)[:3] == ["erklären", "sie", "den"] and "straße" in unicode_tokens(GERMAN)
    assert rouge_tokens(KOREAN) == [] and unicode_tokens(KOREAN)[:2] == ["한국의", "전통"]
    assert unicode_tokens("東京タワーは高い") == ["東", "京", "タ", "ワ", "ー", "は", "高", "い"]
    assert unicode_tokens("Hello, World! a_b 42") == rouge_tokens("Hello, World! a_b 42")  # same on ASCII


def test_dedup_catches_non_english_near_duplicates_only_with_unicode_tokens() -> None:
    reworded = KOREAN.replace("세 가지를", "두 가지를")
    assert dedup_rouge_l([KOREAN, reworded], 0.7) == [True, True]  # no [a-z0-9] token: every score is 0
    assert dedup_rouge_l_detailed([KOREAN, reworded], 0.7, script="any")[1].keep is False
    assert dedup_rouge_l_detailed([GERMAN, GERMAN.replace("größeren", "breiten")], 0.7, script="any")[1].keep is False
    assert dedup_rouge_l_detailed([KOREAN, GERMAN], 0.7, script="any")[1].keep is True


def test_dedup_hand_written() -> None:
    texts = [
        "Write a short poem about the sea.",
        "Write a short poem about the sea.",  # exact duplicate
        "WRITE a short poem -- about the sea!",  # same tokens: duplicate too
        "Write a short poem about the ocean.",  # LCS 6 of 7 tokens: F1 0.857 > 0.7
        "Write a long story about a dragon and a knight.",  # different
        "Write a poem.",  # F1 vs the first = 2*3/(3+7) = 0.6: kept
        "",  # no tokens: every score is 0, kept
        "...",  # no tokens either, kept
    ]
    verdicts = dedup_rouge_l_detailed(texts, 0.7)
    assert [v.keep for v in verdicts] == [True, False, False, False, True, True, True, True]
    assert verdicts[0] == DedupVerdict(True, 0.0, None)
    assert verdicts[1] == DedupVerdict(False, 1.0, 0)
    assert verdicts[3].matched_index == 0 and verdicts[3].max_rouge == pytest.approx(6 / 7)
    assert verdicts[5].max_rouge == pytest.approx(0.6)
    assert verdicts[6] == DedupVerdict(True, 0.0, None)
    assert [v.keep for v in verdicts] == naive(texts, 0.7)


def test_dedup_threshold_is_strict() -> None:
    base = "one two three four five six seven eight nine ten"
    at_threshold = "one two three four five six seven alpha beta gamma"  # LCS 7 of 10: F1 0.7
    above = "one two three four five six seven eight beta gamma"  # LCS 8 of 10: F1 0.8
    assert dedup_rouge_l([base, at_threshold]) == [True, True] == naive([base, at_threshold], 0.7)
    assert dedup_rouge_l([base, above]) == [True, False] == naive([base, above], 0.7)
    a, b = "one two three four five six seven", "one two three four five eight nine ten"
    f1 = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    assert dedup_rouge_l([a, b], threshold=f1) == [True, True]
    assert dedup_rouge_l([a, b], threshold=f1 - 1e-12) == [True, False]


def test_dedup_keeps_the_first_of_a_near_duplicate_group() -> None:
    a = "Explain the water cycle to a child in simple words."
    b = "Explain the water cycle to a child in very simple words."
    assert dedup_rouge_l([a, b]) == [True, False]
    assert dedup_rouge_l([b, a]) == [True, False]
    # Only kept texts count: c resembles the dropped b more than the kept a, yet is judged against a alone.
    c = "Explain the water cycle to a curious child in very simple words please."
    verdicts = dedup_rouge_l_detailed([a, b, c], 0.9)  # F1(c, a) = 20/23 = 0.87, F1(c, b) = 22/24 = 0.92
    assert [v.keep for v in verdicts] == [True, False, True] == naive([a, b, c], 0.9)
    assert verdicts[2].matched_index == 0


def test_dedup_existing_texts_count_as_kept() -> None:
    seeds = ["Name three rivers in Africa.", "Write a haiku about autumn leaves falling."]
    texts = [
        "Write a haiku about autumn leaves.",
        "Name three mountains in Asia.",
        "Name three rivers in Africa!",
    ]
    verdicts = dedup_rouge_l_detailed(texts, 0.7, existing=seeds)
    assert [v.keep for v in verdicts] == [False, True, False] == naive(texts, 0.7, existing=seeds)
    assert [v.matched_index for v in verdicts] == [1, 0, 0]  # indices into [*existing, *texts]
    # Kept candidates join the pool: a later repeat of texts[1] (index 3 overall) matches it.
    again = dedup_rouge_l_detailed([*texts, "Name three mountains in Asia."], 0.7, existing=seeds)[-1]
    assert again == DedupVerdict(False, 1.0, 3)
    assert dedup_rouge_l([], existing=seeds) == []
    assert dedup_rouge_l(["Name three rivers in Africa."], existing=[""]) == [True]


@pytest.mark.parametrize(("max_block", "block_cells"), [(256, 1 << 20), (7, 1 << 20), (256, 40)])
def test_dedup_reports_the_exact_best_match(
    monkeypatch: pytest.MonkeyPatch, max_block: int, block_cells: int
) -> None:
    """Against rouge_score directly, also when candidates are split into small or pool-limited blocks."""
    monkeypatch.setattr(text_module, "_MAX_BLOCK", max_block)
    monkeypatch.setattr(text_module, "_BLOCK_CELLS", block_cells)
    texts = [*random_sentences(100, seed=2), *make_instructions(100, seed=3)]
    existing = ["", *random.Random(1).sample(texts, 4)]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pool = list(existing)
    ids = list(range(len(existing)))
    for index, (text, verdict) in enumerate(
        zip(texts, dedup_rouge_l_detailed(texts, 0.7, existing), strict=True)
    ):
        scores = [scorer.score(other, text)["rougeL"].fmeasure for other in pool]
        best = max(scores)
        first_best = ids[scores.index(best)] if best > 0 else None  # ties resolve to the earliest kept text
        assert verdict == DedupVerdict(best <= 0.7, best, first_best)
        if verdict.keep:
            pool.append(text)
            ids.append(len(existing) + index)


def random_sentences(count: int, seed: int) -> list[str]:
    """Sentences from an 18-word vocabulary around 40 base sentences, so many pairs score near 0.5-0.9."""
    rng = random.Random(seed)
    vocab = ["write", "explain", "list", "give", "the", "a", "of", "to", "short", "poem", "story", "about"]
    vocab += ["sea", "city", "tree", "why", "how", "three"]
    base = [[rng.choice(vocab) for _ in range(rng.randint(3, 12))] for _ in range(40)]
    texts = []
    for _ in range(count):
        words = list(rng.choice(base))
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocab))
        if rng.random() < 0.3:
            del words[rng.randrange(len(words))]
        texts.append(" ".join(words).capitalize() + rng.choice([".", "?", "", "!!"]))
    return texts


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.9])
def test_dedup_matches_rouge_score_on_generated_near_duplicates(threshold: float) -> None:
    texts = random_sentences(300, seed=0)
    fast = dedup_rouge_l(texts, threshold, existing=texts[:5])
    assert fast == naive(texts, threshold, existing=texts[:5])
    assert 0 < sum(fast) < len(texts)
