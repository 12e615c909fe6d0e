"""Pre-registration: hypotheses and criteria written (and frozen) in RESULTS.md before a run, read back and
checked so a finished experiment is judged by what was stated in advance. One RESULTS.md can hold several
pre-registered sections, each with its own name (the first, unnamed one, and e.g. ``link1``): a question added later
gets its own section, written before its results, and never touches the sections already frozen."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from resources.experiment.statistics import Metric, PairedDifference, detectable_effect
from resources.storage.tables import publish_bytes

KINDS = ("better", "not_worse")
BEGIN, END = "<!-- preregistered:begin -->", "<!-- preregistered:end -->"
ANY_END = re.compile(r"<!-- preregistered:(?:[\w-]+:)?end -->")
JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


def markers(name: str = "") -> tuple[str, str]:
    """The begin and end markers of the pre-registered section called ``name`` ("" is the first, unnamed one)."""
    if name and not re.fullmatch(r"[\w-]+", name):
        raise ValueError(f"a pre-registered section's name is letters, digits, _ and -; got {name!r}")
    tag = f"preregistered:{name}:" if name else "preregistered:"
    return f"<!-- {tag}begin -->", f"<!-- {tag}end -->"


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


def preregistration_section(prereg: Preregistration, written: str, name: str = "", heading: str = "") -> str:
    """The marked RESULTS.md section called ``name`` that states the criteria before any result (with a JSON copy);
    ``heading`` names its question in the title."""
    level = 1 - prereg.confidence
    begin, end = markers(name)
    lines = [
        begin,
        f"## Pre-registered criteria{f': {heading}' if heading else ''} (written {written}, before any result)",
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
        end,
    ]
    return "\n".join(lines)


def read_preregistration(markdown: str, name: str = "") -> tuple[str, Preregistration] | None:
    """The pre-registered section called ``name`` (verbatim) and its criteria, or None when ``markdown`` has none."""
    begin, end = markers(name)
    start, stop = markdown.find(begin), markdown.find(end)
    if start < 0 or stop < start:
        return None
    section = markdown[start : stop + len(end)]
    block = JSON_BLOCK.search(section)
    if block is None:
        raise ValueError("the pre-registered section has no ```json block")
    return section, Preregistration.from_json(block.group(1))


def ensure_preregistered(
    results_md: Path, prereg: Preregistration, title: str, name: str = "", heading: str = ""
) -> Preregistration:
    """Write the pre-registered section called ``name`` into ``results_md`` when it has none yet and return the
    criteria in force: an existing section always wins over ``prereg`` (criteria are fixed before the results). A
    new section goes after the last pre-registered section of the file (the others stay as they are, byte for
    byte); into a file without any, the title, the section and an empty results part."""
    text = results_md.read_text() if results_md.exists() else ""
    existing = read_preregistration(text, name) if text else None
    if existing is not None:
        return existing[1]
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = preregistration_section(prereg, written, name, heading)
    ends = list(ANY_END.finditer(text))
    if ends:
        at = ends[-1].end()
        text = f"{text[:at]}\n\n{section}{text[at:]}"
    else:
        text = f"# {title}\n\n{section}\n\n## Results\n\nNot run yet.\n"
    publish_bytes(results_md, text.encode())
    return prereg
