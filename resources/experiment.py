"""Controlled-experiment engine: statistics, pre-registered criteria and the report of an experiment that
compares a treatment arm with control arms over paired replicates.

Replicate ``r`` of every arm shares everything but the arm's own choice (seeds, prompts, candidates, warm
student, student SFT seed), so the per-replicate difference ``treatment − control`` is the cleanest
measure of the arm's effect. For each metric and control the report gives the mean ± sd per arm, the
mean paired difference with its t-interval, the paired t-test's two-sided p-value and the effect size
Cohen's d_z (mean difference / sd of the differences).

Pre-registration: the criteria are written into ``RESULTS.md`` (a marked section with a JSON block)
*before* any result exists; the report keeps that section verbatim and evaluates the criteria read back
from it, so criteria changed in code after the run cannot change the verdict.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
from scipy import optimize, stats

from resources.report import _png, markdown_table, plt
from resources.storage import publish_bytes

BETTER = ("lower", "higher")
KINDS = ("better", "not_worse")
BEGIN, END = "<!-- preregistered:begin -->", "<!-- preregistered:end -->"
JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Metric:
    """One measured quantity per (arm, replicate); ``better`` says which direction is an improvement."""

    name: str
    description: str
    better: str = "lower"

    def __post_init__(self) -> None:
        if self.better not in BETTER:
            raise ValueError(f"metric {self.name}: better must be one of {BETTER}, got {self.better!r}")


@dataclass(frozen=True)
class Summary:
    """Count, mean and sample standard deviation (None below two values) of one arm's metric."""

    n: int
    mean: float
    sd: float | None


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values`` (at least one)."""
    if not values:
        raise ValueError("cannot summarize no values")
    return Summary(len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class PairedDifference:
    """``treatment − control`` paired by replicate, with its t-interval, paired t-test and Cohen's d_z.
    With fewer than two pairs nothing but the mean is defined; with no spread the interval is the point and
    the test and d_z are undefined (None)."""

    replicates: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    p_value: float | None
    d_z: float | None
    confidence: float


def paired_difference(
    treatment: Mapping[int, float], control: Mapping[int, float], confidence: float = 0.95
) -> PairedDifference:
    """Pair the replicates both arms have and compare them."""
    replicates = tuple(sorted(set(treatment) & set(control)))
    if not replicates:
        raise ValueError("no replicate has values for both arms")
    diffs = tuple(treatment[r] - control[r] for r in replicates)
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return PairedDifference(replicates, diffs, mean, None, None, None, None, None, None, confidence)
    sd = statistics.stdev(diffs)
    if sd == 0:
        return PairedDifference(replicates, diffs, mean, 0.0, mean, mean, None, None, None, confidence)
    standard_error = sd / math.sqrt(n)
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * standard_error
    t = mean / standard_error
    p_value = float(2 * stats.t.sf(abs(t), n - 1))
    return PairedDifference(replicates, diffs, mean, sd, mean - half_width, mean + half_width, t, p_value,
                            mean / sd, confidence)


def detectable_effect(replicates: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest Cohen's d_z a two-sided paired t-test at ``alpha`` detects with ``power`` for ``replicates``
    pairs (noncentral t); inf when even d_z = 20 is not enough, or with fewer than two pairs (no test)."""
    if replicates < 2:
        return math.inf
    df = replicates - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(d: float) -> float:
        shift = d * math.sqrt(replicates)
        wrong_side = np.nan_to_num(stats.nct.cdf(-critical, df, shift))  # vanishing; scipy gives nan far out
        return stats.nct.sf(critical, df, shift) + wrong_side - power

    if shortfall(20.0) < 0:
        return math.inf
    return float(optimize.brentq(shortfall, 1e-6, 20.0))


@dataclass(frozen=True)
class Criterion:
    """A decision about ``metric`` for treatment vs ``control``, read from the t-interval of the difference:
    ``better``: the interval lies entirely on the improving side of 0; ``not_worse``: its worse-side bound is
    within ``margin`` (non-inferiority)."""

    metric: str
    control: str
    kind: str = "better"
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"criterion kind must be one of {KINDS}, got {self.kind!r}")

    def describe(self, metric: Metric, treatment: str, confidence: float) -> str:
        """The criterion in words."""
        interval = f"the {confidence:.0%} t-interval of mean({metric.name}: {treatment} − {self.control})"
        if self.kind == "better":
            return f"{interval} lies entirely {'below' if metric.better == 'lower' else 'above'} 0"
        if metric.better == "lower":
            return f"the upper bound of {interval} is below +{self.margin:g}"
        return f"the lower bound of {interval} is above −{self.margin:g}"

    def holds(self, difference: PairedDifference, metric: Metric) -> bool | None:
        """True or False; None when the interval is undefined (fewer than two pairs)."""
        if difference.ci_low is None or difference.ci_high is None:
            return None
        bound = self.margin if self.kind == "not_worse" else 0.0
        if metric.better == "lower":
            return difference.ci_high < bound
        return difference.ci_low > -bound


@dataclass(frozen=True)
class Hypothesis:
    """A claim that holds when all its criteria hold (an intersection-union test: each criterion at the
    full level, no multiplicity correction needed for the conjunction)."""

    name: str
    claim: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Preregistration:
    """Everything decided before the results: arms, metrics, hypotheses, replicates, confidence."""

    treatment: str
    controls: tuple[str, ...]
    metrics: tuple[Metric, ...]
    hypotheses: tuple[Hypothesis, ...]
    replicates: int
    confidence: float = 0.95
    notes: tuple[str, ...] = field(default=())

    @property
    def arms(self) -> tuple[str, ...]:
        """Controls first, the treatment last (the order of tables and plots)."""
        return (*self.controls, self.treatment)

    def metric(self, name: str) -> Metric:
        """The metric called ``name``."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise ValueError(f"unknown metric {name!r}; pre-registered: {[m.name for m in self.metrics]}")

    def to_json(self) -> str:
        """Stable JSON of the pre-registration."""
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Preregistration:
        """Inverse of :meth:`to_json`."""
        raw = json.loads(text)
        hypotheses = tuple(
            Hypothesis(h["name"], h["claim"], tuple(Criterion(**c) for c in h["criteria"])) for h in raw["hypotheses"]
        )
        return cls(raw["treatment"], tuple(raw["controls"]), tuple(Metric(**m) for m in raw["metrics"]), hypotheses,
                   raw["replicates"], raw["confidence"], tuple(raw["notes"]))


def preregistration_section(prereg: Preregistration, written: str) -> str:
    """The marked RESULTS.md section that states the criteria before any result (with a JSON copy)."""
    level = 1 - prereg.confidence
    lines = [
        BEGIN,
        f"## Pre-registered criteria (written {written}, before any result)",
        "",
        f"Arms: treatment **{prereg.treatment}**, controls {', '.join(f'**{c}**' for c in prereg.controls)}; "
        f"{prereg.replicates} paired replicates per arm (replicate r of every arm shares seeds, prompts, "
        "candidates, warm student and the student's SFT seed).",
        "",
        "Metrics per arm and replicate:",
        "",
        *[f"- `{m.name}` ({m.better} is better): {m.description}" for m in prereg.metrics],
        "",
        f"Statistics: mean ± sd per arm; per control the paired difference {prereg.treatment} − control with its "
        f"{prereg.confidence:.0%} t-interval, the two-sided paired t-test p-value and Cohen's d_z.",
        "",
        "Hypotheses (each holds when all its criteria hold):",
        "",
    ]
    for hypothesis in prereg.hypotheses:
        lines.append(f"- **{hypothesis.name}**: {hypothesis.claim}")
        lines += [f"  - {c.describe(prereg.metric(c.metric), prereg.treatment, prereg.confidence)}"
                  for c in hypothesis.criteria]
    detectable = detectable_effect(prereg.replicates, level)
    lines += [
        "",
        f"Sensitivity: with {prereg.replicates} replicates a paired t-test at α = {level:.2g} detects d_z ≥ "
        f"{detectable:.2f} with 80% power; smaller true effects will often read as not supported."
        if math.isfinite(detectable) else
        f"Sensitivity: with {prereg.replicates} replicate(s) the paired t-test cannot detect any effect.",
        *[f"\n{note}" for note in prereg.notes],
        "",
        "```json",
        prereg.to_json(),
        "```",
        END,
    ]
    return "\n".join(lines)


def read_preregistration(markdown: str) -> tuple[str, Preregistration] | None:
    """The pre-registered section (verbatim) and its criteria, or None when ``markdown`` has none."""
    start, stop = markdown.find(BEGIN), markdown.find(END)
    if start < 0 or stop < start:
        return None
    section = markdown[start : stop + len(END)]
    block = JSON_BLOCK.search(section)
    if block is None:
        raise ValueError("the pre-registered section has no ```json block")
    return section, Preregistration.from_json(block.group(1))


def ensure_preregistered(results_md: Path, prereg: Preregistration, title: str) -> Preregistration:
    """Write ``results_md`` with the pre-registered section when it has none yet and return the criteria in
    force: an existing section always wins over ``prereg`` (criteria are fixed before the results)."""
    existing = read_preregistration(results_md.read_text()) if results_md.exists() else None
    if existing is not None:
        return existing[1]
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"# {title}\n\n{preregistration_section(prereg, written)}\n\n## Results\n\nNot run yet.\n"
    publish_bytes(results_md, text.encode())
    return prereg


def _values(records: Sequence[Mapping], arm: str, metric: str) -> dict[int, float]:
    return {int(r["replicate"]): float(r[metric]) for r in records if r["arm"] == arm and r.get(metric) is not None}


def _arm_summary(by_replicate: dict[int, float]) -> dict | None:
    """Summary of one arm's metric with its values by replicate (None without values)."""
    if not by_replicate:
        return None
    return {**asdict(summarize(list(by_replicate.values()))), "by_replicate": by_replicate}


def _finite(value: object) -> object:
    """JSON-safe: non-finite floats become None, containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def analyze(records: Sequence[Mapping], prereg: Preregistration) -> dict:
    """Every number of the report: per-arm summaries, paired comparisons, hypothesis verdicts and the records."""
    records = [r for r in records if r["arm"] in prereg.arms]
    arms = {arm: {m.name: _arm_summary(_values(records, arm, m.name)) for m in prereg.metrics} for arm in prereg.arms}
    comparisons = {}
    for metric in prereg.metrics:
        treated = _values(records, prereg.treatment, metric.name)
        for control in prereg.controls:
            untreated = _values(records, control, metric.name)
            if treated and untreated and set(treated) & set(untreated):
                comparisons[metric.name, control] = paired_difference(treated, untreated, prereg.confidence)
    hypotheses = []
    for hypothesis in prereg.hypotheses:
        verdicts = []
        for criterion in hypothesis.criteria:
            difference = comparisons.get((criterion.metric, criterion.control))
            holds = None if difference is None else criterion.holds(difference, prereg.metric(criterion.metric))
            text = criterion.describe(prereg.metric(criterion.metric), prereg.treatment, prereg.confidence)
            verdicts.append({**asdict(criterion), "statement": text, "holds": holds})
        outcomes = [v["holds"] for v in verdicts]
        verdict = ("not supported" if False in outcomes else "not testable" if None in outcomes else "supported")
        hypotheses.append({"name": hypothesis.name, "claim": hypothesis.claim, "verdict": verdict,
                           "criteria": verdicts})
    finished = {(r["arm"], int(r["replicate"])) for r in records}
    expected = {(arm, r) for arm in prereg.arms for r in range(prereg.replicates)}
    return _finite({
        "complete": expected <= finished,
        "jobs": {"expected": len(expected), "finished": len(finished & expected)},
        "arms": arms,
        "comparisons": [{"metric": m, "treatment": prereg.treatment, "control": c, **asdict(d)}
                        for (m, c), d in comparisons.items()],
        "hypotheses": hypotheses,
        "records": sorted((dict(r) for r in records), key=lambda r: (prereg.arms.index(r["arm"]), r["replicate"])),
    })


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(value: object) -> str:
    return _number(value) if isinstance(value, float) else "–" if value is None else str(value)


def _detail_summaries(records: Sequence[Mapping], arms: Sequence[str], names: Sequence[str]) -> pl.DataFrame:
    """Per arm, ``mean ± sd (n)`` of each numeric record field in ``names`` over the replicates with a finite value."""
    table: dict[str, list[str]] = {"arm": list(arms)}
    for name in names:
        cells = []
        for arm in arms:
            values = [v for v in _values(records, arm, name).values() if math.isfinite(v)]
            summary = summarize(values) if values else None
            cells.append("–" if summary is None else f"{_number(summary.mean)} ± {_number(summary.sd)} (n={summary.n})")
        table[name] = cells
    return pl.DataFrame(table)


def render_results(
    analysis: dict, prereg: Preregistration, design: Mapping[str, object], figure: str, details: Sequence[str] = (),
) -> str:
    """The results section of RESULTS.md (markdown) from :func:`analyze`'s output; ``details`` names further
    record fields (not pre-registered metrics, e.g. diagnostics) shown in the table of every arm and replicate."""
    jobs = analysis["jobs"]
    status = "complete" if analysis["complete"] else f"INCOMPLETE ({jobs['finished']} of {jobs['expected']} jobs)"
    lines = [f"## Results ({status}; generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})", ""]
    if design:
        lines += ["Design as run:", "", *[f"- {key}: {value}" for key, value in design.items()], ""]
    lines += ["### Verdicts" + ("" if analysis["complete"] else " (provisional: not every job has finished)"), ""]
    for hypothesis in analysis["hypotheses"]:
        lines.append(f"- **{hypothesis['name']}: {hypothesis['verdict']}** ({hypothesis['claim']})")
        lines += [f"  - {'met' if c['holds'] else 'not met' if c['holds'] is False else 'not testable'}: "
                  f"{c['statement']}" for c in hypothesis["criteria"]]
    per_arm = {"arm": list(prereg.arms)}
    for metric in prereg.metrics:
        cells = []
        for arm in prereg.arms:
            s = analysis["arms"][arm][metric.name]
            cells.append("–" if s is None else f"{_number(s['mean'])} ± {_number(s['sd'])} (n={s['n']})")
        per_arm[f"{metric.name} ({metric.better} better)"] = cells
    lines += ["", "### Per arm (mean ± sd over replicates)", "", markdown_table(pl.DataFrame(per_arm))]
    numeric = [name for name in details if any(isinstance(r.get(name), float) for r in analysis["records"])]
    if numeric:
        lines += ["", "### Diagnostics per arm (mean ± sd over replicates; not pre-registered)", "",
                  markdown_table(_detail_summaries(analysis["records"], prereg.arms, numeric))]
    rows = [{
        "metric": c["metric"], "control": c["control"], "n": str(len(c["differences"])),
        f"mean {prereg.treatment} − control": _number(c["mean"]),
        f"{prereg.confidence:.0%} CI": f"[{_number(c['ci_low'])}, {_number(c['ci_high'])}]",
        "p (paired t)": _number(c["p_value"], 3), "d_z": _number(c["d_z"], 2),
    } for c in analysis["comparisons"]]
    if rows:
        lines += ["", "### Paired differences", "", markdown_table(pl.DataFrame(rows))]
    records = [{"arm": r["arm"], "replicate": str(r["replicate"]),
                **{m.name: _number(r.get(m.name)) for m in prereg.metrics},
                **{name: _cell(r.get(name)) for name in details},
                "seconds": _number(r.get("seconds"), 0)} for r in analysis["records"]]
    if records:
        lines += ["", "### Every arm and replicate", "", markdown_table(pl.DataFrame(records))]
    lines += ["", f"![{figure}]({figure})", ""]
    return "\n".join(lines)


def effect_png(analysis: dict, prereg: Preregistration) -> bytes:
    """One panel per metric: each replicate as a point (lines join a replicate across arms), beside it the
    arm mean as a bar with ± one sd."""
    figure, axes = plt.subplots(1, len(prereg.metrics), figsize=(4.2 * len(prereg.metrics), 3.8), squeeze=False)
    replicates = sorted({r["replicate"] for r in analysis["records"]})
    offsets = dict(zip(replicates, np.linspace(-0.12, 0.12, max(len(replicates), 1)), strict=False))
    for axis, metric in zip(axes[0], prereg.metrics, strict=True):
        for replicate in replicates:
            points = [(i + offsets[replicate], r[metric.name]) for i, arm in enumerate(prereg.arms)
                      for r in analysis["records"]
                      if r["arm"] == arm and r["replicate"] == replicate and r.get(metric.name) is not None]
            if points:
                axis.plot(*zip(*points, strict=True), color="grey", linewidth=0.6, alpha=0.6, marker="o",
                          markersize=4, markerfacecolor="tab:blue", markeredgewidth=0)
        for index, arm in enumerate(prereg.arms):
            summary = analysis["arms"][arm][metric.name]
            if summary is not None:
                axis.errorbar(index + 0.3, summary["mean"], yerr=summary["sd"] or 0.0, fmt="_", color="black",
                              markersize=22, capsize=4, zorder=3)
        axis.set_xticks(range(len(prereg.arms)), prereg.arms, rotation=20)
        axis.set(title=f"{metric.name} ({metric.better} is better)")
    return _png(figure)


def write_report(
    folder: Path, records: Sequence[Mapping], prereg: Preregistration, design: Mapping[str, object], title: str,
    details: Sequence[str] = (),
) -> dict:
    """Write ``RESULTS.md`` (the pre-registered section kept verbatim, then the results), ``results.json``
    (every number) and ``effect.png`` into ``folder``; return the analysis. The criteria evaluated are the
    ones in the file's pre-registered section (written now from ``prereg`` if there is none); ``details``: see
    :func:`render_results`."""
    results_md = Path(folder) / "RESULTS.md"
    prereg = ensure_preregistered(results_md, prereg, title)
    section, _ = read_preregistration(results_md.read_text())
    analysis = analyze(records, prereg)
    figure = "effect.png"
    publish_bytes(Path(folder) / figure, effect_png(analysis, prereg))
    document = {"title": title, "design": dict(design), "preregistration": json.loads(prereg.to_json()), **analysis}
    publish_bytes(Path(folder) / "results.json",
                  json.dumps(_finite(document), indent=2, ensure_ascii=False, allow_nan=False).encode())
    body = render_results(analysis, prereg, design, figure, details)
    publish_bytes(results_md, f"# {title}\n\n{section}\n\n{body}".encode())
    return analysis


EFFECT_ARMS = ("self_instruct", "dpo_random", "dpo_student_loss", "montessori")
GENERAL_LOSS_MARGIN = 0.05  # nats per answer token, about 5% perplexity


def effect_preregistration(replicates: int = 5) -> Preregistration:
    """The effect experiment's design and criteria: does the influence-tuned teacher teach the task better
    than the untuned teacher, and is it the influence signal (not DPO as such, not the student's own loss)?"""
    metrics = (
        Metric("task_loss", "the student's mean answer-token loss on the task's held-out set "
               "(data/heldout_math.jsonl) after SFT on the arm's final dataset", "lower"),
        Metric("general_loss", "the same student's loss on the general held-out set (data/heldout_set.jsonl)",
               "lower"),
        Metric("on_task_share", "share of the arm's final instructions that resources.on_task counts as "
               "arithmetic problems (numbers plus a computation cue)", "higher"),
    )
    hypotheses = (
        Hypothesis("H1", "the influence-tuned teacher's data teaches the task better than the untuned teacher's",
                   (Criterion("task_loss", "self_instruct"),)),
        Hypothesis("H2", "the gain comes from the influence signal: it beats DPO on random pairs and DPO on "
                   "student-loss pairs", (Criterion("task_loss", "dpo_random"),
                                          Criterion("task_loss", "dpo_student_loss"))),
        Hypothesis("H3", "the tuned teacher writes more on-task instructions than the untuned teacher and than "
                   "DPO on random pairs", (Criterion("on_task_share", "self_instruct"),
                                           Criterion("on_task_share", "dpo_random"))),
        Hypothesis("H4", f"general ability is not harmed: the general held-out loss is at most "
                   f"{GENERAL_LOSS_MARGIN} nats above the untuned teacher's (about 5% perplexity)",
                   (Criterion("general_loss", "self_instruct", "not_worse", GENERAL_LOSS_MARGIN),)),
    )
    notes = (
        "H1 is the primary question; H2-H4 are secondary and each is read on its own (no correction across "
        "hypotheses). A hypothesis that is not supported is reported as such, whatever the point estimates say.",
    )
    return Preregistration("montessori", EFFECT_ARMS[:-1], metrics, hypotheses, replicates, 0.95, notes)
