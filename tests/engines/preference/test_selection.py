"""Row selection (``student_dataset.select`` and the experiment's link-1 arms): each rule keeps the rows it promises
on hand-made scores, ties are broken by candidate_id, and the kept rows stay in the table's order."""

from __future__ import annotations

import polars as pl
import pytest

from resources.preference.selection import RULES, SelectionParams, score_columns, select_rows, selected_count

# candidate_id order differs from row order on purpose; c3/c5 tie on influence, c2/c4 on the student's loss
ROWS = pl.DataFrame({
    "candidate_id": ["c6", "c2", "c5", "c1", "c4", "c3"],
    "instruction": [f"instruction {i}" for i in range(6)],
    "influence": [0.30, -0.20, 0.10, 0.50, -0.40, 0.10],
    "candidate_loss": [1.0, 3.0, 2.0, 0.5, 3.0, 1.5],
})


def kept(rule: str, share: float = 0.5, seed: int = 0, rows: pl.DataFrame = ROWS) -> list[str]:
    return select_rows(rows, SelectionParams(rule, share, seed))["candidate_id"].to_list()


def test_each_rule_keeps_the_rows_it_promises_in_table_order() -> None:
    assert kept("top_influence") == ["c6", "c1", "c3"], "0.5, 0.3 and of the tied 0.1s the smaller id"
    assert kept("bottom_influence") == ["c2", "c4", "c3"], "-0.4, -0.2 and of the tied 0.1s the smaller id"
    assert kept("top_student_loss") == ["c2", "c5", "c4"], "3.0, 3.0 (both), 2.0"
    assert kept("top_student_loss", share=1 / 6) == ["c2"], "of the tied 3.0s the smaller id"
    assert kept("top_influence", share=1.0) == ROWS["candidate_id"].to_list()
    assert select_rows(ROWS, SelectionParams("none", 0.5, 0)).equals(ROWS), "none: the table unchanged"


def test_random_is_seeded_and_does_not_depend_on_row_order() -> None:
    first = kept("random", seed=1)
    assert len(first) == 3 and set(first) <= set(ROWS["candidate_id"])
    assert kept("random", seed=1, rows=ROWS.reverse()) == first[::-1], "same rows, in the reversed table's order"
    drawn = {tuple(kept("random", seed=seed)) for seed in range(20)}
    assert len(drawn) > 5, "different seeds draw different subsets"


def test_count_rounds_half_up_and_keeps_at_least_one() -> None:
    assert [selected_count(n, 0.5) for n in (0, 1, 2, 3, 5, 36)] == [0, 1, 1, 2, 3, 18]
    assert selected_count(10, 0.01) == 1 and selected_count(10, 1.0) == 10
    assert len(kept("top_influence", share=0.25)) == 2  # 1.5 rounds up


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="unknown selection rule"):
        SelectionParams("best", 0.5, 0)
    with pytest.raises(ValueError, match="share"):
        SelectionParams("random", 0.0, 0)
    with pytest.raises(ValueError, match="candidate_loss"):
        select_rows(ROWS.drop("candidate_loss"), SelectionParams("top_student_loss", 0.5, 0))
    with pytest.raises(ValueError, match="NaN"):
        select_rows(ROWS.with_columns(influence=pl.lit(float("nan"))), SelectionParams("top_influence", 0.5, 0))
    with pytest.raises(ValueError, match="unique"):
        select_rows(pl.concat([ROWS, ROWS]), SelectionParams("random", 0.5, 0))


def test_score_columns_name_what_each_rule_reads() -> None:
    assert {rule: score_columns(SelectionParams(rule, 0.5, 0)) for rule in RULES} == {
        "none": ["influence"], "random": ["influence"], "top_influence": ["influence"],
        "bottom_influence": ["influence"], "top_student_loss": ["influence", "candidate_loss"],
    }
