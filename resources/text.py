"""Temporary lead version (helper replaces): parsing, filters, ROUGE-L dedup."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq

BLACKLIST = re.compile(r"\b(image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to|video|audio|music|flowchart|diagram)\b", re.I)


def parse_instruction(raw: str) -> str | None:
    """Text of the first instruction in a prefilled teacher output."""
    text = raw
    if "<instruction>" in text.split("</instruction>")[0] and text.find("<instruction>") < text.find("</instruction>"):
        text = text.split("<instruction>", 1)[1]
    for stop in ("</instruction>", "<|im_end|>", "<instruction>"):
        text = text.split(stop, 1)[0]
    text = " ".join(text.split())
    return text or None


def filter_verdict(instruction: str | None, min_words: int = 5, max_words: int = 400) -> str:
    """'ok' or the first failed filter."""
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
    if BLACKLIST.search(instruction):
        return "unsupported_task"
    return "ok"


@dataclass(frozen=True)
class DedupVerdict:
    keep: bool
    max_rouge: float
    matched_index: int | None


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def dedup_rouge_l_detailed(texts, threshold=0.7, existing=()):
    pool = [_tokens(t) for t in existing]
    out = []
    for text in texts:
        tokens = _tokens(text)
        best, where = 0.0, None
        for i, other in enumerate(pool):
            if not tokens or not other:
                continue
            lcs = LCSseq.similarity(tokens, other)
            p, r = lcs / len(tokens), lcs / len(other)
            f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
            if f > best:
                best, where = f, i
        keep = best <= threshold
        out.append(DedupVerdict(keep, best, where))
        if keep:
            pool.append(tokens)
    return out
