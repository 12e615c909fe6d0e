"""Text engine of synthesis: parse the teacher's output, apply the paper's filters, drop near-duplicates.

Near-duplicate removal reproduces the decisions of the straightforward loop with Google's
``rouge_score`` (``RougeScorer(["rougeL"])``, no stemmer): a text is dropped when its ROUGE-L F1
against any already-kept text is strictly greater than the threshold. It is fast because every
text is tokenized once, pairs whose F1 cannot exceed the threshold are skipped by a length bound
and a bag-of-words bound, and the LCS itself runs in C (rapidfuzz).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq

STOPS = ("</instruction>", "<|im_end|>", "<instruction>")
# The paper's blacklist of tasks a text-only model cannot do, matched as whole words.
UNSUPPORTED = re.compile(
    r"\b(image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to|video|audio|music"
    r"|flowchart|diagram)\b",
    re.IGNORECASE,
)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def parse_instruction(raw: str) -> str | None:
    """The instruction in a teacher output generated after a prefilled ``<instruction>`` tag.

    A complete ``<instruction>…</instruction>`` pair before any closing tag wins; otherwise the text
    runs up to the first closing tag, end-of-turn token, new opening tag or the end. Whitespace is
    collapsed; an empty result is None."""
    opening, closing = raw.find("<instruction>"), raw.find("</instruction>")
    text = raw[opening + len("<instruction>") :] if 0 <= opening < closing else raw
    for stop in STOPS:
        text = text.split(stop, 1)[0]
    return " ".join(text.split()) or None


def filter_verdict(instruction: str | None, min_words: int = 5, max_words: int = 400) -> str:
    """``ok`` or the first failed filter: unparsed, non_ascii, leading_punctuation, too_short, too_long,
    unsupported_task (the paper's image/graph/file/map/draw/plot/"go to" blacklist, whole words)."""
    if instruction is None:
        return "unparsed"
    if not instruction.isascii():
        return "non_ascii"
    if instruction[0] in string.punctuation:
        return "leading_punctuation"
    words = len(instruction.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if UNSUPPORTED.search(instruction):
        return "unsupported_task"
    return "ok"


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenization: lowercase, non-alphanumerics as separators, no stemming."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def rouge_l_f1(lcs: int, length_a: int, length_b: int) -> float:
    """ROUGE-L F1 from an LCS length, computed exactly as rouge_score does."""
    if lcs == 0:
        return 0.0
    precision, recall = lcs / length_a, lcs / length_b
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class DedupVerdict:
    """Whether a text is kept, its highest ROUGE-L F1 against the pool and which pool text that was.

    ``max_rouge`` is exact when above the threshold; below it, pairs that provably score at most the
    threshold are skipped, so it is the highest score actually computed (a lower bound)."""

    keep: bool
    max_rouge: float
    matched_index: int | None


class _Pool:
    """Kept texts with what the bounds need: tokens, length and token counts."""

    def __init__(self) -> None:
        self.tokens: list[list[str]] = []
        self.counts: list[Counter[str]] = []

    def add(self, tokens: list[str]) -> None:
        self.tokens.append(tokens)
        self.counts.append(Counter(tokens))

    def best_match(self, tokens: list[str], threshold: float) -> tuple[float, int | None]:
        """Highest F1 against the pool; pairs whose bound is at most ``threshold`` are not computed,
        so the returned max is exact whenever it exceeds the threshold."""
        best, where = 0.0, None
        if not tokens:
            return best, where
        counts, n = Counter(tokens), len(tokens)
        for index, other in enumerate(self.tokens):
            m = len(other)
            if not m or rouge_l_f1(min(n, m), n, m) <= threshold:
                continue
            overlap = sum((counts & self.counts[index]).values())
            if rouge_l_f1(overlap, n, m) <= threshold:
                continue
            score = rouge_l_f1(int(LCSseq.similarity(tokens, other)), n, m)
            if score > best:
                best, where = score, index
        return best, where


def dedup_rouge_l_detailed(
    texts: Sequence[str], threshold: float = 0.7, existing: Sequence[str] = ()
) -> list[DedupVerdict]:
    """For each text in order: kept unless its ROUGE-L F1 with ``existing`` or an earlier kept text
    exceeds ``threshold``. ``matched_index`` counts ``existing`` first, then kept texts."""
    pool = _Pool()
    for text in existing:
        pool.add(rouge_tokens(text))
    verdicts = []
    for text in texts:
        tokens = rouge_tokens(text)
        best, where = pool.best_match(tokens, threshold)
        keep = best <= threshold
        verdicts.append(DedupVerdict(keep, best, where))
        if keep:
            pool.add(tokens)
    return verdicts


def dedup_rouge_l(texts: Sequence[str], threshold: float = 0.7, existing: Sequence[str] = ()) -> list[bool]:
    """Keep flags of :func:`dedup_rouge_l_detailed`."""
    return [verdict.keep for verdict in dedup_rouge_l_detailed(texts, threshold, existing)]
