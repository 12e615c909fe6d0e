"""An experiment's results: every arm and replicate analysed against the pre-registered criteria, rendered as
markdown with a plot, and published atomically."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from resources.evaluation.report import figure_png, markdown_table, plt
from resources.experiment.preregistration import Preregistration, ensure_preregistered, read_preregistration
from resources.experiment.statistics import paired_difference, summarize
from resources.storage.tables import publish_bytes


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
    heading: str = "Results",
) -> str:
    """The results section of RESULTS.md (markdown) from :func:`analyze`'s output, under ``heading``; ``details``
    names further record fields (not pre-registered metrics, e.g. diagnostics) shown in the table of every arm and
    replicate."""
    jobs = analysis["jobs"]
    status = "complete" if analysis["complete"] else f"INCOMPLETE ({jobs['finished']} of {jobs['expected']} jobs)"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {heading} ({status}; generated {generated})", ""]
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
    return figure_png(figure)


@dataclass(frozen=True)
class Study:
    """One pre-registered question of an experiment: its criteria, the records of its jobs and how the report
    shows them. ``name``: its pre-registered section's (the first study's is ""); ``heading``: its question in
    the section titles; ``details``: see :func:`render_results`; ``figure``: its plot's file name."""

    prereg: Preregistration
    records: Sequence[Mapping]
    name: str = ""
    heading: str = ""
    details: Sequence[str] = ()
    figure: str = "effect.png"


READING_BEGIN, READING_END = "<!-- reading:begin -->", "<!-- reading:end -->"


def kept_reading(text: str) -> str | None:
    """The reading a person wrote into RESULTS.md after the results, between :data:`READING_BEGIN` and
    :data:`READING_END` (markers included), which every rewrite of the report keeps; None when there is none."""
    start, end = text.find(READING_BEGIN), text.find(READING_END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(READING_END)]


def write_studies(folder: Path, title: str, design: Mapping[str, object], studies: Sequence[Study]) -> list[dict]:
    """Write ``RESULTS.md`` (a person's reading of the results kept verbatim under the title (:func:`kept_reading`),
    every study's pre-registered section kept verbatim, then every study's results),
    ``results.json`` (every number: the first study at the top level, the others under ``studies`` by name) and each
    study's plot into ``folder``; return each study's analysis. The criteria evaluated are the ones in the file's
    pre-registered sections (written now from the study's ``prereg`` where there is none)."""
    results_md = Path(folder) / "RESULTS.md"
    in_force = [ensure_preregistered(results_md, s.prereg, title, s.name, s.heading) for s in studies]
    text = results_md.read_text()
    sections, bodies, analyses, documents = [], [], [], {}
    for index, (study, prereg) in enumerate(zip(studies, in_force, strict=True)):
        sections.append(read_preregistration(text, study.name)[0])
        analysis = analyze(study.records, prereg)
        publish_bytes(Path(folder) / study.figure, effect_png(analysis, prereg))
        shown = design if index == 0 else {}
        heading = f"Results: {study.heading}" if study.heading else "Results"
        bodies.append(render_results(analysis, prereg, shown, study.figure, study.details, heading))
        documents[study.name] = {"preregistration": json.loads(prereg.to_json()), **analysis}
        analyses.append(analysis)
    first = documents.pop(studies[0].name)
    document = {"title": title, "design": dict(design), **first, **({"studies": documents} if documents else {})}
    publish_bytes(Path(folder) / "results.json",
                  json.dumps(_finite(document), indent=2, ensure_ascii=False, allow_nan=False).encode())
    reading = kept_reading(text)
    parts = [f"# {title}", *([reading] if reading else []), *sections, *bodies]
    publish_bytes(results_md, "\n\n".join(parts).encode())
    return analyses

