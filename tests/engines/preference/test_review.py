"""The pair review: a sheet exported, edited and read back (CSV and JSONL), and every way a sheet can fail."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from resources.preference.pairs import build_pairs
from resources.preference.review import (
    NO_PAIRS_LEFT,
    ReviewError,
    apply_review,
    dpo_pairs,
    pair_ids,
    read_sheet,
    review_sheet,
    review_summary,
    sheet_version,
    write_sheet,
)
from resources.training.trl_trainers import dpo_dataset

RERUN = "run `montessori review export --profile p --to FILE`"


@pytest.fixture
def pairs() -> pl.DataFrame:
    """Three pairs, one per prompt (a positive and a negative null-step influence each)."""
    losses = [1.80, 1.95, 1.81, 1.96, 1.82, 1.97]
    prompts = ["a", "a", "b", "b", "c", "c"]
    table = pl.DataFrame({
        "prompt_id": prompts, "prompt": [f"Write a task like {p}.\n\nOne line." for p in prompts],
        "candidate_id": [f"c{i}" for i in range(6)], "instruction": [f"instruction, number {i}" for i in range(6)],
        "loss_before": [2.0] * 6, "loss_null_step": [1.9] * 6, "loss_after": losses,
    })
    return build_pairs(table, "null_step", "sign")


def filled(sheet: pl.DataFrame, decisions: list[str]) -> pl.DataFrame:
    return sheet.with_columns(decision=pl.Series(decisions), note=pl.Series([f"n{i}" for i in range(len(decisions))]))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_export_edit_import_round_trip(tmp_path: Path, pairs: pl.DataFrame, suffix: str) -> None:
    path = tmp_path / f"review{suffix}"
    sheet = review_sheet({1: pairs}, reviewer="ada")
    assert sheet["decision"].to_list() == [""] * 3 and set(sheet["reviewer"]) == {"ada"}
    write_sheet(sheet, path)
    read_back = read_sheet(str(path))
    assert read_back["pair_id"].to_list() == pair_ids(pairs).to_list()
    assert read_back["prompt"].to_list() == pairs["prompt"].to_list()  # newlines survive the file format
    write_sheet(filled(read_back, [" Keep", "DROP", "swap "]), path, overwrite=True)

    reviewed = apply_review(pairs, read_sheet(str(path)), 1, str(path), RERUN)
    assert reviewed["decision"].to_list() == ["keep", "drop", "swap"]
    assert reviewed["review"].unique().to_list() == [sheet_version(str(path))]
    kept, swapped = reviewed.row(0, named=True), reviewed.row(2, named=True)
    assert (kept["chosen"], kept["rejected"]) == (pairs["chosen"][0], pairs["rejected"][0])
    assert (swapped["chosen"], swapped["rejected"]) == (pairs["rejected"][2], pairs["chosen"][2])
    assert swapped["margin"] == pytest.approx(-pairs["margin"][2])
    trained = dpo_pairs(reviewed)
    assert trained["pair_id"].to_list() == [reviewed["pair_id"][0], reviewed["pair_id"][2]]
    records = dpo_dataset(trained)
    assert pairs["rejected"][2] in records[1]["chosen"][0]["content"]  # DPO now prefers the once-rejected text
    assert review_summary(reviewed) == {"review": sheet_version(str(path)), "reviewer": "ada", "pairs_kept": 1,
                                        "pairs_dropped": 1, "pairs_swapped": 1}


def test_unreviewed_pairs_train_whole(pairs: pl.DataFrame) -> None:
    assert dpo_pairs(pairs).height == pairs.height
    assert review_summary(pairs)["review"] == "off"


def test_edited_texts_are_ignored_and_other_rounds_rows_too(tmp_path: Path, pairs: pl.DataFrame) -> None:
    path = tmp_path / "review.csv"
    other_round = review_sheet({2: pairs.with_columns(chosen_id=pl.lit("x") + pl.col("chosen_id"))})
    sheet = pl.concat([filled(review_sheet({1: pairs}), ["keep"] * 3).with_columns(chosen=pl.lit("edited")),
                       other_round])
    write_sheet(sheet, path)
    reviewed = apply_review(pairs, read_sheet(str(path)), 1, str(path), RERUN)
    assert reviewed["chosen"].to_list() == pairs["chosen"].to_list()
    assert review_summary(reviewed)["reviewer"] == "unnamed"


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s.with_columns(pair_id=pl.Series(["0badc0ffee00", *s["pair_id"][1:]])),
     ["pair ids not among the current pairs", "rows 1 (0badc0ffee00)", "1 current pair(s) missing from the sheet"]),
    (lambda s: s.head(2), ["1 current pair(s) missing from the sheet"]),
    (lambda s: pl.concat([s, s.tail(1)]), ["pairs listed more than once: rows 3 (", ", 4 ("]),
    (lambda s: s.with_columns(decision=pl.Series(["keep", "", "drop"])), ["no decision: rows 2 ("]),
    (lambda s: s.with_columns(decision=pl.Series(["keep", "maybe", "drop"])),
     ["unknown decision (use keep, drop, swap): rows 2 ("]),
    (lambda s: s.with_columns(decision=pl.lit("drop")), [NO_PAIRS_LEFT]),
])
def test_a_review_that_does_not_cover_the_pairs_is_refused(
    tmp_path: Path, pairs: pl.DataFrame, edit, expected: list[str]  # noqa: ANN001
) -> None:
    path = tmp_path / "review.csv"
    write_sheet(edit(filled(review_sheet({1: pairs}), ["keep", "swap", "drop"])), path)
    with pytest.raises(ReviewError) as raised:
        apply_review(pairs, read_sheet(str(path)), 1, str(path), RERUN)
    message = str(raised.value)
    assert str(path) in message and RERUN in message
    for part in expected:
        assert part in message


def test_unreadable_sheets(tmp_path: Path, pairs: pl.DataFrame) -> None:
    with pytest.raises(ReviewError, match=r"unknown extension '\.xlsx'"):
        write_sheet(review_sheet({1: pairs}), tmp_path / "review.xlsx")
    with pytest.raises(ReviewError, match="does not exist"):
        read_sheet(str(tmp_path / "absent.csv"))
    (tmp_path / "bare.csv").write_text("pair_id,verdict\nabc,keep\n")
    with pytest.raises(ReviewError, match=r"bare\.csv has no decision column"):
        read_sheet(str(tmp_path / "bare.csv"))


def test_export_never_replaces_a_review_in_progress(tmp_path: Path, pairs: pl.DataFrame) -> None:
    path = tmp_path / "review.jsonl"
    write_sheet(review_sheet({1: pairs}), path)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_sheet(review_sheet({1: pairs}), path)
    assert [p.name for p in tmp_path.iterdir()] == ["review.jsonl"]  # no scratch file left behind
