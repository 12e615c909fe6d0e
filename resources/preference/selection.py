"""Keep a share of a dataset's rows by a per-row signal: the ``student_dataset.select`` setting and the selection arms
of the effect experiment (link 1: does local influence pick data that helps the student?) use this one function.

Rules (``SelectionParams.rule``):

- ``none``: every row, the table unchanged.
- ``top_influence`` / ``bottom_influence``: the rows with the highest / lowest ``influence`` (local data influence
  on the reference loss from the warm student). The ranking does not depend on the influence baseline: the
  null-step loss is the same for every row scored from one warm state, so ``null_step`` scores are the
  ``before_step`` scores shifted by one constant.
- ``random``: a seeded random subset, independent of the table's row order (each row ranked by a hash of the seed and
  its ``candidate_id``).
- ``top_student_loss``: the rows the warm student finds hardest (highest ``candidate_loss``), the paper's
  training-loss signal.

How many: ``round(share x rows)``, at least one (``selected_count``). Ties are broken by ``candidate_id`` (ascending),
so the same table and settings always keep the same rows. The kept rows stay in the table's order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import polars as pl

RULES = ("none", "top_influence", "bottom_influence", "random", "top_student_loss")
SCORE_COLUMN = {"top_influence": "influence", "bottom_influence": "influence", "top_student_loss": "candidate_loss"}
"""The column each scored rule ranks by (``none`` and ``random`` need no score)."""
DESCENDING = {"top_influence": True, "bottom_influence": False, "top_student_loss": True}


@dataclass(frozen=True)
class SelectionParams:
    """Which rows to keep: ``rule`` (one of :data:`RULES`), the ``share`` of rows kept (0 < share <= 1) and the
    ``seed`` of the ``random`` rule."""

    rule: str
    share: float
    seed: int

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown selection rule {self.rule!r}; choose one of {list(RULES)}")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"selection share must be in (0, 1], got {self.share}")

    @property
    def score_column(self) -> str | None:
        """The column the rule ranks by, or None (``none``, ``random``)."""
        return SCORE_COLUMN.get(self.rule)


def score_columns(params: SelectionParams) -> list[str]:
    """The score columns a scored dataset carries under ``params``: ``influence`` (what curriculum order and sample
    weights read too) and the rule's own."""
    return ["influence", *([params.score_column] if params.score_column not in (None, "influence") else [])]


def selected_count(rows: int, share: float) -> int:
    """How many of ``rows`` rows a share keeps: ``share x rows`` rounded half up, at least 1 (0 of no rows)."""
    return 0 if rows == 0 else max(1, math.floor(share * rows + 0.5))


def _random_key(seed: int, candidate_id: str) -> str:
    return hashlib.sha256(f"{seed}\x1f{candidate_id}".encode()).hexdigest()


def select_rows(rows: pl.DataFrame, params: SelectionParams) -> pl.DataFrame:
    """The rows ``params`` keeps (see the module docstring), in the table's order. ``rows`` needs ``candidate_id``
    (unique) and the rule's score column without missing or NaN values."""
    if params.rule == "none":
        return rows
    if "candidate_id" not in rows.columns:
        raise ValueError("selection needs a candidate_id column")
    if rows["candidate_id"].n_unique() != rows.height:
        raise ValueError("selection needs unique candidate_id values")
    count = selected_count(rows.height, params.share)
    if params.rule == "random":
        ranked = rows.select("candidate_id", key=pl.col("candidate_id").map_elements(
            lambda cid: _random_key(params.seed, cid), return_dtype=pl.String)).sort("key", "candidate_id")
    else:
        column = params.score_column
        if column not in rows.columns:
            raise ValueError(f"selection rule {params.rule!r} needs a {column!r} column")
        scores = rows[column].cast(pl.Float64)
        if scores.null_count() or scores.is_nan().any():
            raise ValueError(f"selection rule {params.rule!r}: the {column!r} column has missing or NaN values")
        ranked = rows.select("candidate_id", column).sort(
            [column, "candidate_id"], descending=[DESCENDING[params.rule], False]
        )
    kept = ranked["candidate_id"].head(count).implode()
    return rows.filter(pl.col("candidate_id").is_in(kept))
