"""Text engine of synthesis: parse the teacher's output, apply the paper's filters, drop near-duplicates.

Near-duplicate removal reproduces the decisions of the straightforward loop with Google's
``rouge_score`` (``RougeScorer(["rougeL"])``, no stemmer): a text is dropped when its ROUGE-L F1
against any already-kept text is strictly greater than the threshold. It is fast because every
text is tokenized once and encoded as one character per distinct token, and the LCS against the
whole kept pool runs in one rapidfuzz C call, with F1 computed as a numpy vector using the same
float operations, in the same order, as rouge_score.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
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


@dataclass(frozen=True)
class DedupVerdict:
    """Whether a text is kept, its highest ROUGE-L F1 against the pool and which pool text that was."""

    keep: bool
    max_rouge: float
    matched_index: int | None


class _Pool:
    """Kept texts encoded as strings of one character per distinct token, so that rapidfuzz computes
    token-level LCS against the whole pool in one C call."""

    def __init__(self) -> None:
        self.vocabulary: dict[str, str] = {}
        self.encoded: list[str] = []
        self.lengths = np.zeros(0, dtype=np.int64)

    def encode(self, tokens: list[str]) -> str:
        """One private character per distinct token (planes 1-16, so no surrogates)."""
        return "".join(self.vocabulary.setdefault(t, chr(0x10000 + len(self.vocabulary))) for t in tokens)

    def add(self, encoded: str) -> None:
        self.encoded.append(encoded)
        self.lengths = np.append(self.lengths, len(encoded))

    def best_match(self, encoded: str) -> tuple[float, int | None]:
        """Highest ROUGE-L F1 against the pool (0.0, None when either side has no tokens)."""
        if not encoded or not self.encoded:
            return 0.0, None
        lcs = process.cdist([encoded], self.encoded, scorer=LCSseq.similarity, dtype=np.int64)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = lcs / len(encoded), lcs / self.lengths
            f1 = np.where(lcs > 0, 2 * precision * recall / (precision + recall), 0.0)
        index = int(np.argmax(f1))
        return (float(f1[index]), index) if f1[index] > 0 else (0.0, None)


def dedup_rouge_l_detailed(
    texts: Sequence[str], threshold: float = 0.7, existing: Sequence[str] = ()
) -> list[DedupVerdict]:
    """For each text in order: kept unless its ROUGE-L F1 with ``existing`` or an earlier kept text
    exceeds ``threshold``. ``matched_index`` counts ``existing`` first, then kept texts."""
    pool = _Pool()
    for text in existing:
        pool.add(pool.encode(rouge_tokens(text)))
    verdicts = []
    for text in texts:
        encoded = pool.encode(rouge_tokens(text))
        best, where = pool.best_match(encoded)
        keep = best <= threshold
        verdicts.append(DedupVerdict(keep, best, where))
        if keep:
            pool.add(encoded)
    return verdicts


def dedup_rouge_l(texts: Sequence[str], threshold: float = 0.7, existing: Sequence[str] = ()) -> list[bool]:
    """Keep flags of :func:`dedup_rouge_l_detailed`."""
    return [verdict.keep for verdict in dedup_rouge_l_detailed(texts, threshold, existing)]
