"""The cost ledger: one table per run, one row per step, and the per-stage summary with Montessori's overhead.

A run's ledger is the folder ``{tables}/{namespace}/cost_ledger/{run_id}/``; every step publishes its own row there
as one Parquet file named after its step key (atomically; a retried step replaces its row, so nothing is counted
twice), and reading the folder gives the run's table. A stage is an asset's node: a graph-backed asset (influence
scores: a planning step, one scoring step per shard, a merge) has a row per step, summed into the stage.

Money is computed when a step is recorded and stored with the price table's content and hash, never recomputed
from today's prices.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields

import polars as pl

from resources.cost.prices import PriceTable
from resources.cost.usage import Usage
from resources.storage.tables import TableStore

LEDGER_FOLDER = "cost_ledger"
MONTESSORI_ONLY = ("synthetic_instructions", "warm_student", "influence_scores", "preference_pairs",
                   "teacher_checkpoint")
"""The stages (of every round) that Self-Instruct does not need: the rounds' candidates, warm student, influence,
pairs and teacher DPO. Both methods then write their dataset (student_dataset and baseline_dataset)."""
BASELINE = "baseline_dataset"
SCHEMA = {
    "run_id": pl.String, "step": pl.String, "stage": pl.String, "asset": pl.String, "recorded_at": pl.Float64,
    **{f.name: pl.Float64 if f.type == "float" else pl.Int64 for f in fields(Usage)},
    "examples_per_second": pl.Float64, "reused": pl.Boolean, "money": pl.Float64, "currency": pl.String,
    "price_table": pl.String, "price_table_version": pl.String,
}


def stage_of(step_key: str) -> str:
    """The stage (the asset's node) a step belongs to: ``influence_scores.score_influence_shard[shard_0]`` ->
    ``influence_scores``."""
    return step_key.split(".")[0]


def _file_name(step_key: str) -> str:
    """A step key as a file name: brackets and other signs become underscores."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", step_key)


@dataclass(frozen=True)
class StageCost:
    """What one stage of a run used and cost (money None without a price table)."""

    stage: str
    asset: str | None
    usage: Usage
    money: float | None
    currency: str | None


class CostLedger:
    """The cost ledgers of the runs writing tables under ``namespace`` of ``store``."""

    def __init__(self, store: TableStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def folder(self, run_id: str):  # noqa: ANN201 - a UPath
        """The folder holding run ``run_id``'s ledger."""
        return self.store.base.joinpath(self.namespace, LEDGER_FOLDER, _file_name(run_id))

    def record(
        self, run_id: str, step_key: str, asset: str | None, usage: Usage, prices: PriceTable | None
    ) -> dict[str, object]:
        """Publish the row of one step (its money at ``prices`` if they charge anything); return the row."""
        charged = prices is not None and prices.charges
        row = {
            "run_id": run_id, "step": step_key, "stage": stage_of(step_key), "asset": asset,
            "recorded_at": time.time(), **usage.as_dict(), "reused": usage.reused,
            "money": prices.money(usage) if charged else None, "currency": prices.currency if charged else None,
            "price_table": prices.content() if charged else None,
            "price_table_version": prices.version if charged else None,
        }
        frame = pl.DataFrame([row], schema=SCHEMA)
        self.store.write(frame, self.folder(run_id) / f"{_file_name(step_key)}.parquet")
        return row

    def read(self, run_id: str) -> pl.DataFrame:
        """Run ``run_id``'s ledger, one row per step in the order they were recorded (empty when none)."""
        folder = self.folder(run_id)
        paths = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.exists() else []
        if not paths:
            return pl.DataFrame(schema=SCHEMA)
        return pl.concat([TableStore.read(p, self.store.policy) for p in paths]).sort("recorded_at")

    def stage(self, run_id: str, stage: str) -> StageCost:
        """The sum of the rows of ``stage`` in run ``run_id``'s ledger."""
        (cost,) = stage_costs(self.read(run_id).filter(pl.col("stage") == stage))
        return cost


def stage_costs(ledger: pl.DataFrame) -> list[StageCost]:
    """The ledger's rows summed per stage, in the order the stages finished: times, tokens and examples add up,
    peaks take the largest, money adds up (None when no row was priced)."""
    costs = []
    for (stage,), rows in ledger.sort("recorded_at").group_by("stage", maintain_order=True):
        usages = [Usage.from_dict(row) for row in rows.iter_rows(named=True)]
        total = sum(usages[1:], usages[0])
        priced = rows.filter(pl.col("money").is_not_null())
        assets = rows["asset"].drop_nulls()
        costs.append(StageCost(
            stage, assets[0] if assets.len() else None, total,
            float(priced["money"].sum()) if priced.height else None,
            priced["currency"][0] if priced.height else None,
        ))
    return sorted(costs, key=lambda cost: ledger.filter(pl.col("stage") == cost.stage)["recorded_at"].max())


def _base_name(asset: str | None, stage: str) -> str:
    return (asset or stage).split("/")[-1]


@dataclass(frozen=True)
class Overhead:
    """Montessori's extra stages against the Self-Instruct baseline dataset's own cost."""

    extra_seconds: float
    baseline_seconds: float
    extra_money: float | None
    baseline_money: float | None

    @property
    def ratio(self) -> float:
        """The extra stages' wall seconds per wall second of the baseline dataset."""
        return self.extra_seconds / self.baseline_seconds if self.baseline_seconds > 0 else float("nan")

    @property
    def money_ratio(self) -> float | None:
        """The same ratio in money (None without prices)."""
        if self.extra_money is None or not self.baseline_money:
            return None
        return self.extra_money / self.baseline_money

    def sentence(self, projected: bool = False) -> str:
        """One line for the run summary, or for a plan's projection (``projected``)."""
        took = "would take" if projected else "took"
        text = (f"{'Projected ' if projected else ''}Montessori overhead over Self-Instruct: {self.ratio:.1f}x (the "
                f"stages only Montessori needs {took} {self.extra_seconds:.0f} s against {self.baseline_seconds:.0f} s "
                f"for the baseline dataset")
        if self.money_ratio is not None:
            text += f"; {self.money_ratio:.1f}x in money"
        return text + ")"


def overhead(costs: Iterable[StageCost]) -> Overhead | None:
    """Montessori's overhead in a run that materialized the baseline dataset and at least one Montessori-only
    stage (:data:`MONTESSORI_ONLY`, every round); None otherwise."""
    costs = list(costs)
    extra = [c for c in costs if _base_name(c.asset, c.stage) in MONTESSORI_ONLY]
    baseline = [c for c in costs if _base_name(c.asset, c.stage) == BASELINE]
    if not extra or not baseline:
        return None
    priced = all(c.money is not None for c in [*extra, *baseline])
    return Overhead(
        sum(c.usage.wall_seconds for c in extra), baseline[0].usage.wall_seconds,
        sum(c.money for c in extra) if priced else None, baseline[0].money if priced else None,
    )


def _rate(usage: Usage) -> str:
    """Examples per second, or ``-`` for a stage too short (under 0.05 s) for its rate to mean anything."""
    return f"{usage.examples_per_second:.2f}" if usage.wall_seconds >= 0.05 else "-"


def cost_table(costs: list[StageCost]) -> str:
    """The per-stage table and its total as text."""
    money = any(c.money is not None for c in costs)
    header = (f"{'stage':<24}{'wall s':>8}{'CPU s':>8}{'GPU s':>7}{'peak RSS MB':>12}{'tokens in':>10}"
              f"{'tokens out':>11}{'trained':>9}{'examples':>9}{'ex/s':>8}{'reused':>7}")
    lines = [header + (f"{'money':>10}" if money else "")]
    for cost in [*costs, StageCost("total", None, sum((c.usage for c in costs), Usage()),
                                   sum(c.money for c in costs if c.money is not None) if money else None,
                                   next((c.currency for c in costs if c.currency), None))]:
        u = cost.usage
        name = cost.asset or cost.stage
        line = (f"{name:<24}{u.wall_seconds:>8.1f}{u.cpu_seconds:>8.1f}{u.accelerator_seconds:>7.1f}"
                f"{u.peak_rss_mb:>12.0f}{u.tokens_in:>10,}{u.tokens_out:>11,}{u.tokens_trained:>9,}"
                f"{u.examples:>9,}{_rate(u):>8}{u.reused_examples:>7,}")
        if money:
            line += f"{cost.money:>10.4f}" if cost.money is not None else f"{'-':>10}"
        lines.append(line)
    if money:
        lines.append(f"money in {next(c.currency for c in costs if c.currency)}, at the prices recorded with each step")
    return "\n".join(lines)
