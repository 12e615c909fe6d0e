"""Decontamination: generated rows that reproduce the reference set or the held-out set.

The teacher is tuned toward what lowers the student's loss on the reference set, so reproducing that set (or the
held-out set the student is judged on) is exactly what it is rewarded for. Every checked row (its instruction and
its answer) is compared with every item (instruction and response) of each named set by two rules:

- **Shared word n-gram.** Texts are compared as rouge_score's tokens (lower case, runs of ``[a-z0-9]``), the words
  ROUGE-L dedup uses. A generated text ``g`` and a set text ``r`` match when they share a run of
  ``max(min_ngram, min(ngram, len(g), len(r)))`` words: 13 words (``ngram``, the GPT-3 / LLaMA decontamination
  length) between long texts; the whole shorter text when it has fewer than 13 words but at least ``min_ngram``
  (8, the floor GPT-3 used because shorter runs collide by chance, e.g. "what is the capital of"). The project's
  reference and held-out items are short (median 7-18 words), so without the smaller n a verbatim copy of most of
  them could never share a 13-gram with anything.
- **Near-duplicate.** ROUGE-L F1 (the synthesis dedup machinery,
  :func:`~resources.synthesis.text_filters.rouge_l_matrix`) of the instruction against each set instruction, and of
  the answer against each set response, strictly above ``rouge_threshold``. This catches texts under ``min_ngram``
  words copied whole and light paraphrases of them.

The first n-gram hit (instruction before answer, longest run first) names the match; without one, the highest
ROUGE-L above the threshold does. :func:`decontaminate` marks the rows of a synthesis table (columns
``contaminated``, ``contamination_set``, ``contamination_item``, ``contamination_evidence``) and, under action
``drop``, turns a kept row's verdict into ``contaminated`` (it stays in the table like any filtered sample);
``warn`` and ``block`` only mark (``block`` is enforced by the caller, a blocking check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from resources.synthesis.text_filters import rouge_l_matrix, rouge_tokens

ACTIONS = ("drop", "block", "warn")
FIELDS = ("instruction", "response")
CONTAMINATED = "contaminated"
COLUMNS = {"contaminated": pl.Boolean, "contamination_set": pl.String, "contamination_item": pl.String,
           "contamination_evidence": pl.String}


@dataclass(frozen=True)
class DecontaminationParams:
    """The two rules' sizes: ``ngram`` words shared between long texts, ``min_ngram`` the shortest run that counts
    (texts shorter than it are judged by ROUGE-L only), ``rouge_threshold`` the near-duplicate bound."""

    ngram: int
    min_ngram: int
    rouge_threshold: float

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.ngram:
            raise ValueError(f"need 1 <= min_ngram <= ngram, got min_ngram={self.min_ngram}, ngram={self.ngram}")


@dataclass(frozen=True)
class Match:
    """Which set and item a generated row reproduces, and the evidence (the shared words or the ROUGE-L score)."""

    set: str
    item: str
    evidence: str


@dataclass(frozen=True)
class _Source:
    set: str
    item: str
    field: str
    words: int


class NgramIndex:
    """Every n-gram (``min_ngram`` <= n <= ``ngram``) of every set text, so a generated text is checked with one
    dictionary look-up per window."""

    def __init__(self, references: Mapping[str, pl.DataFrame], params: DecontaminationParams) -> None:
        self.params = params
        self.grams: dict[tuple[str, ...], list[_Source]] = {}
        for name, table in references.items():
            for item, *texts in table.select("id", *FIELDS).iter_rows():
                for field, text in zip(FIELDS, texts, strict=True):
                    words = rouge_tokens(text or "")
                    source = _Source(name, str(item), field, len(words))
                    for n in range(params.min_ngram, min(params.ngram, len(words)) + 1):
                        for start in range(len(words) - n + 1):
                            self.grams.setdefault(tuple(words[start:start + n]), []).append(source)

    def find(self, text: str) -> tuple[_Source, str] | None:
        """The first set text sharing a run of the required length with ``text``, and that run."""
        words = rouge_tokens(text)
        limit = min(self.params.ngram, len(words))
        for n in range(limit, self.params.min_ngram - 1, -1):
            for start in range(len(words) - n + 1):
                window = tuple(words[start:start + n])
                for source in self.grams.get(window, ()):
                    if n == max(self.params.min_ngram, min(limit, source.words)):
                        return source, " ".join(window)
        return None


def find_contamination(
    instructions: Sequence[str], responses: Sequence[str | None], references: Mapping[str, pl.DataFrame],
    params: DecontaminationParams,
) -> list[Match | None]:
    """For each generated (instruction, response), the set item it reproduces, or None. ``references`` maps a set's
    name (e.g. ``reference_set``) to its table (columns ``id``, ``instruction``, ``response``)."""
    index = NgramIndex(references, params)
    items = [(name, str(item)) for name, table in references.items() for item in table["id"]]
    near = {field: _best_rouge(texts, [t for table in references.values() for t in table[field]])
            for field, texts in zip(FIELDS, (instructions, responses), strict=True)}
    matches: list[Match | None] = []
    for row, texts in enumerate(zip(instructions, responses, strict=True)):
        match = None
        for field, text in zip(FIELDS, texts, strict=True):
            hit = index.find(text or "")
            if hit is not None:
                source, words = hit
                match = Match(source.set, source.item,
                              f"{len(words.split())}-gram shared by the {field} and the item's {source.field}: "
                              f"'{words}'")
                break
        if match is None:
            field = max(FIELDS, key=lambda f: near[f][0][row])
            score, column = near[field][0][row], near[field][1][row]
            if score > params.rouge_threshold:
                name, item = items[column]
                match = Match(name, item, f"ROUGE-L F1 {score:.2f} between the {field} and the item's {field}")
        matches.append(match)
    return matches


def _best_rouge(texts: Sequence[str | None], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's highest ROUGE-L F1 against ``targets`` and the index of that target."""
    if not texts or not targets:
        return np.zeros(len(texts)), np.zeros(len(texts), dtype=int)
    scores = rouge_l_matrix([text or "" for text in texts], targets)
    return scores.max(axis=1), scores.argmax(axis=1)


def decontaminate(
    table: pl.DataFrame, references: Mapping[str, pl.DataFrame], params: DecontaminationParams, action: str
) -> pl.DataFrame:
    """Mark every kept row of a synthesis table (``instruction``, ``response``, ``kept``, ``verdict``) that
    reproduces a set item; under ``drop`` those rows are no longer kept and their verdict is ``contaminated``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown decontamination action {action!r}; choose one of {list(ACTIONS)}")
    rows = [i for i, kept in enumerate(table["kept"]) if kept]
    found = find_contamination([table["instruction"][i] for i in rows], [table["response"][i] for i in rows],
                               references, params)
    matches: list[Match | None] = [None] * table.height
    for i, match in zip(rows, found, strict=True):
        matches[i] = match
    marked = table.with_columns(
        pl.Series("contaminated", [m is not None for m in matches], dtype=pl.Boolean),
        pl.Series("contamination_set", [m and m.set for m in matches], dtype=pl.String),
        pl.Series("contamination_item", [m and m.item for m in matches], dtype=pl.String),
        pl.Series("contamination_evidence", [m and m.evidence for m in matches], dtype=pl.String),
    )
    if action != "drop":
        return marked
    return marked.with_columns(
        verdict=pl.when("contaminated").then(pl.lit(CONTAMINATED)).otherwise("verdict"),
        kept=pl.col("kept") & ~pl.col("contaminated"),
    )


def contamination_counts(table: pl.DataFrame) -> dict[str, int]:
    """How many rows matched each set (``{}`` when none did)."""
    flagged = table.filter(pl.col("contaminated"))
    return {name: n for name, n in flagged["contamination_set"].value_counts().sort("contamination_set").iter_rows()}


def contaminated_rows(table: pl.DataFrame, limit: int = 20) -> list[str]:
    """One line per contaminated row (its candidate id, or its row number from 0 in ``table`` when it has none; the
    set, item and evidence), at most ``limit``."""
    flagged = table.with_row_index("row").filter(pl.col("contaminated"))
    names = (f"candidate {candidate} (row {row})" if candidate else f"row {row}" for row, candidate in zip(
        flagged["row"], flagged["candidate_id"] if "candidate_id" in flagged.columns else [None] * flagged.height,
        strict=True))
    lines = [f"{name}: {set_name} item {item} ({evidence})" for name, set_name, item, evidence in
             zip(names, *flagged.select("contamination_set", "contamination_item", "contamination_evidence"),
                 strict=False)]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
