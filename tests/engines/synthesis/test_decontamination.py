"""Decontamination on planted rows: a verbatim copy, a 13-word overlap inside a longer text, a paraphrase below the
threshold (passes), the short-text rule, and each action."""

from __future__ import annotations

import polars as pl
import pytest

from assets.config import DecontaminationSettings
from resources.synthesis.decontamination import (
    DecontaminationParams,
    contaminated_rows,
    contamination_counts,
    decontaminate,
    find_contamination,
)
from resources.synthesis.text_filters import rouge_l_matrix

PARAMS = DecontaminationSettings().params()  # 13-gram, floor 8, ROUGE-L 0.7
REFERENCE = pl.DataFrame({
    "id": ["ref-1", "ref-2", "ref-3"],
    "instruction": ["Name the largest planet in our solar system.",
                    "Explain why the sky looks blue on a clear afternoon in summer.",
                    "Sort these numbers."],
    "response": ["Jupiter is the largest planet in our solar system. It is a gas giant more than eleven times wider "
                 "than Earth.",
                 "Sunlight scatters off the molecules of the air, and blue light scatters the most, so the sky looks "
                 "blue to us.",
                 "1, 2, 3."],
})
HELDOUT = pl.DataFrame({
    "id": ["held-1"], "instruction": ["Give two tips for sleeping better at night."],
    "response": ["Keep a regular bedtime and avoid screens for an hour before sleeping, since their light keeps "
                 "you awake."],
})
SETS = {"reference_set": REFERENCE, "heldout_set": HELDOUT}

VERBATIM = (HELDOUT["instruction"][0], HELDOUT["response"][0])
# 13 consecutive words of ref-2's response inside a longer, otherwise different answer
OVERLAP_13 = ("Why is the daytime sky blue and not some other colour?",
              "In short: sunlight scatters off the molecules of the air, and blue light scatters the shorter "
              "waves more strongly than red, which is what we notice overhead during the day.")
PARAPHRASE = ("Which planet is the biggest one orbiting our Sun?",
              "Of all the planets circling the Sun, Jupiter is the biggest: a giant ball of gas over eleven Earths "
              "across.")
CLEAN = ("Write a haiku about autumn leaves falling.", "Red leaves drift and fall, the cold wind carries them home.")


def test_planted_rows() -> None:
    rows = [VERBATIM, OVERLAP_13, PARAPHRASE, CLEAN]
    matches = find_contamination([r[0] for r in rows], [r[1] for r in rows], SETS, PARAMS)
    verbatim, overlap, paraphrase, clean = matches
    assert (verbatim.set, verbatim.item) == ("heldout_set", "held-1")
    assert (overlap.set, overlap.item) == ("reference_set", "ref-2")
    assert overlap.evidence.startswith("13-gram shared by the response")
    assert "'sunlight scatters off the molecules of the air and blue light scatters the'" in overlap.evidence
    assert float(rouge_l_matrix([OVERLAP_13[1]], [REFERENCE["response"][1]])[0, 0]) < PARAMS.rouge_threshold
    assert float(rouge_l_matrix([PARAPHRASE[0]], [REFERENCE["instruction"][0]])[0, 0]) < PARAMS.rouge_threshold
    assert paraphrase is None and clean is None


def test_twelve_shared_words_between_long_texts_pass() -> None:
    words = REFERENCE["response"][1].split()[:12]  # one word short of the 13-gram
    answer = "Put simply, " + " ".join(words) + " and that is the whole reason, as any textbook will explain."
    assert find_contamination(["What colour is the sky at noon?"], [answer], SETS, PARAMS) == [None]
    assert find_contamination(["x"], [answer], SETS, DecontaminationParams(12, 8, 0.7))[0] is not None


def test_short_texts_use_the_whole_text_down_to_the_floor() -> None:
    twelve_words = REFERENCE["instruction"][1]  # under 13 words: all of it must be shared
    inside = f"Here is a task for you: {twelve_words} Answer in one paragraph for a child."
    (match,) = find_contamination([inside], ["An answer."], SETS, PARAMS)
    assert match.item == "ref-2" and match.evidence.startswith("12-gram shared by the instruction")
    ten_of_them = inside.replace(" in summer.", ".")
    assert find_contamination([ten_of_them], ["An answer."], SETS, PARAMS) == [None]
    lifted = "It is a gas giant more than eleven times wider?"  # a short text lifted from ref-1's long answer
    (match,) = find_contamination([lifted], ["Yes."], SETS, PARAMS)
    assert match.item == "ref-1" and match.evidence.startswith("10-gram shared by the instruction and the item's re")
    three_words = "Please sort these numbers from the list above, then add them."  # ref-3 is under the floor
    assert find_contamination([three_words], ["Done."], SETS, PARAMS) == [None]
    copied = find_contamination([REFERENCE["instruction"][2]], [REFERENCE["response"][2]], SETS, PARAMS)[0]
    assert copied.item == "ref-3" and copied.evidence.startswith("ROUGE-L F1 1.00")  # whole short copy


def synthesis_table() -> pl.DataFrame:
    rows = [VERBATIM, OVERLAP_13, PARAPHRASE, CLEAN, (REFERENCE["instruction"][0], None)]
    return pl.DataFrame({
        "instruction": [r[0] for r in rows], "response": [r[1] for r in rows],
        "verdict": ["ok", "ok", "ok", "ok", "near_duplicate"], "kept": [True, True, True, True, False],
    })


def test_drop_keeps_the_rows_with_their_verdict_and_match() -> None:
    table = decontaminate(synthesis_table(), SETS, PARAMS, "drop")
    assert table.height == 5
    assert table["verdict"].to_list() == ["contaminated", "contaminated", "ok", "ok", "near_duplicate"]
    assert table["kept"].to_list() == [False, False, True, True, False]
    assert table["contamination_item"].to_list() == ["held-1", "ref-2", None, None, None]  # a rejected row: unchecked
    assert contamination_counts(table) == {"heldout_set": 1, "reference_set": 1}
    assert contaminated_rows(table)[0].startswith("row 0: heldout_set item held-1 (")


@pytest.mark.parametrize("action", ["warn", "block"])
def test_warn_and_block_only_mark(action: str) -> None:
    table = decontaminate(synthesis_table(), SETS, PARAMS, action)
    assert table["verdict"].to_list() == ["ok", "ok", "ok", "ok", "near_duplicate"]
    assert table["kept"].to_list() == [True, True, True, True, False]
    assert table["contaminated"].to_list() == [True, True, False, False, False]


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown decontamination action 'skip'"):
        decontaminate(synthesis_table(), SETS, PARAMS, "skip")
    with pytest.raises(ValueError, match="min_ngram <= ngram"):
        DecontaminationParams(8, 13, 0.7)
