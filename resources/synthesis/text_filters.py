"""Text engine of synthesis: parse the teacher's output, apply filters, drop near-duplicates.

Two parsers (:func:`parse_instruction` for a prefilled opening tag, :func:`parse_last_instruction` as
Montessori-Instruct's code parses) and two filter sets (:func:`official_filter`, Montessori-Instruct's
post-processing; :func:`filter_verdict`, the Self-Instruct-style word-count filters).

Scripts (:data:`SCRIPTS`): both reference codes are written for English. Under ``ascii`` (their rule) the filters
reject non-ASCII text (the official filter: a non-ASCII first character; Self-Instruct's: any non-ASCII
character) and ROUGE-L compares rouge_score's ``[a-z0-9]`` tokens, in which a Korean text has no token at all.
Under ``any`` no text is rejected for its script and ROUGE-L compares Unicode tokens (:func:`unicode_tokens`).

Near-duplicate removal makes exactly the decisions of the straightforward loop with Google's
``rouge_score`` (``RougeScorer(["rougeL"], use_stemmer=False)``): candidates are visited in order and
one is dropped when its ROUGE-L F1 against any already-kept text is strictly greater than the threshold.
It is fast because every text is tokenized once (rouge_score's tokenizer, reproduced) and encoded as a
string of one code point per distinct token, so that rapidfuzz computes the token-level LCS of a whole
block of candidates against the whole kept pool in one C call; F1 is then computed as a numpy matrix
with the same float operations, in the same order, as rouge_score, so threshold comparisons agree
bit for bit. Nothing is pruned, so the reported best score is the exact maximum over the pool.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

OPEN_TAG, CLOSE_TAG, END_OF_TURN = "<instruction>", "</instruction>", "<|im_end|>"
# Words naming tasks a text-only model cannot do. Each entry must appear as a whole word, case-insensitively
# (``\b(word)\b``, as in both reference codes): "a map" and "Map-reduce" match, "mapping", "plotting",
# "profile" and "drawing" do not (only the listed forms count), and "go to" needs exactly one space.
# Montessori-Instruct's post-processing (``src/utils.py``) uses these 13 ...
OFFICIAL_BLOCKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to",
)  # fmt: skip
# ... Self-Instruct's filter (Wang et al. 2023) five more.
BLACKLIST = (*OFFICIAL_BLOCKLIST, "video", "audio", "music", "flowchart", "diagram")


def _whole_words(words: Sequence[str]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)


UNSUPPORTED, OFFICIAL_UNSUPPORTED = _whole_words(BLACKLIST), _whole_words(OFFICIAL_BLOCKLIST)
# A closed pair as the reference parser forms them, left to right: an opening tag, then the shortest text up
# to the next closing tag (which may hold a stray opening tag of an unclosed pair before it).
_CLOSED_PAIR = re.compile(re.escape(OPEN_TAG) + "(.*?)" + re.escape(CLOSE_TAG), re.DOTALL)
# The reference removes ``<input>`` / ``</input>`` tags with this whitespace handling (the text is collapsed
# first, so runs are single spaces): a closing tag takes the spaces on both sides with it; an opening tag
# does so only when a space precedes it, else it goes alone. Words either side of a removed tag can thus
# join ("this <input>The" becomes "thisThe"); reproduced as is, since it shapes the official data.
_INPUT_TAGS = re.compile(r"\s*</input>\s*|\s+<input>\s*|<input>")
OFFICIAL_MIN_CHARS, OFFICIAL_MAX_CHARS = 6, 400
_PUNCTUATION = tuple(string.punctuation)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# Candidates decided per rapidfuzz call: at most _MAX_BLOCK, fewer when the kept pool is large so that
# one block's score matrices stay around _BLOCK_CELLS entries (a few MiB).
_MAX_BLOCK, _BLOCK_CELLS = 256, 1 << 20


def parse_instruction(raw: str) -> str | None:
    """The instruction in a teacher output generated after a prefilled ``<instruction>`` tag.

    Anything after the end-of-turn token ``<|im_end|>`` is ignored. If the rest holds a complete
    ``<instruction>…</instruction>`` pair before its first closing tag, that pair's content is taken;
    otherwise the text up to the first closing tag, new opening tag or the end. Whitespace runs are
    collapsed to single spaces; an empty result is None."""
    text = raw.split(END_OF_TURN, 1)[0]
    opening, closing = text.find(OPEN_TAG), text.find(CLOSE_TAG)
    if 0 <= opening < closing:
        text = text[opening + len(OPEN_TAG) :]
    for stop in (CLOSE_TAG, OPEN_TAG):
        text = text.split(stop, 1)[0]
    return " ".join(text.split()) or None


def parse_last_instruction(raw: str) -> str | None:
    """The content of the last closed ``<instruction>…</instruction>`` pair of a teacher output (the official
    parser), with whitespace runs collapsed to single spaces; None when no pair is closed.

    Anything after the end-of-turn token ``<|im_end|>`` is ignored (the reference stops sampling there).
    Pairs are formed as the reference forms them, left to right, each opening tag with the next closing
    tag; a pair may be empty (then ``""``)."""
    pairs = _CLOSED_PAIR.findall(raw.split(END_OF_TURN, 1)[0])
    return " ".join(pairs[-1].split()) if pairs else None


def filter_verdict(instruction: str | None, min_words: int = 5, max_words: int = 400, script: str = "ascii") -> str:
    """The Self-Instruct-style filters: ``"ok"`` or the first failed check, in this order: ``unparsed``
    (None), ``non_ascii`` (under ``script`` ``ascii`` only), ``leading_punctuation``, ``too_short`` / ``too_long``
    (whitespace-split words outside ``[min_words, max_words]``), ``unsupported_task`` (a whole-word
    :data:`BLACKLIST` hit)."""
    if instruction is None:
        return "unparsed"
    if script == "ascii" and not instruction.isascii():
        return "non_ascii"
    if instruction.lstrip().startswith(_PUNCTUATION):
        return "leading_punctuation"
    words = len(instruction.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if UNSUPPORTED.search(instruction):
        return "unsupported_task"
    return "ok"


def official_filter(instruction: str, script: str = "ascii") -> tuple[str, str]:
    """The official post-processing: ``(verdict, text)``, the verdict ``"ok"`` or the first failed check.

    The text is whitespace-collapsed and passed through ``str.capitalize`` as in the reference, which
    upper-cases the first character and lower-cases all others ("Explain NASA" becomes "Explain nasa").
    Checks, in order: ``too_short`` / ``too_long`` (at most 5 or more than 400 characters), ``unsupported_task``
    (a whole-word :data:`OFFICIAL_BLOCKLIST` hit), ``leading_punctuation``, ``non_ascii_start`` (only the
    first character must be ASCII; under ``script`` ``ascii`` only). A passing text then loses its
    ``<input>``/``</input>`` tags (see ``_INPUT_TAGS``); the length is judged before, with the tags."""
    text = " ".join(instruction.split()).capitalize()
    if len(text) < OFFICIAL_MIN_CHARS:
        return "too_short", text
    if len(text) > OFFICIAL_MAX_CHARS:
        return "too_long", text
    if OFFICIAL_UNSUPPORTED.search(text):
        return "unsupported_task", text
    if text.startswith(_PUNCTUATION):
        return "leading_punctuation", text
    if script == "ascii" and not text[0].isascii():
        return "non_ascii_start", text
    return "ok", _INPUT_TAGS.sub("", text)


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokens: lowercase, runs of characters other than ``[a-z0-9]`` separate
    tokens, no stemming (its final ``^[a-z0-9]+$`` check only drops the empty strings ``split`` skips)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


# Han ideographs and kana: one token each (those scripts are written without spaces between words).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNICODE_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


def unicode_tokens(text: str) -> list[str]:
    """Tokens of any script: lowercased runs of Unicode letters and digits, each Han or kana character a token of
    its own ("Straße" and "größere" are one token each, where rouge_score makes "stra", "e", "gr", "ere")."""
    return _UNICODE_TOKEN.findall(text.lower())


SCRIPTS: dict[str, Callable[[str], list[str]]] = {"ascii": rouge_tokens, "any": unicode_tokens}
"""Per script option, the tokens ROUGE-L compares (the filters' ASCII rule applies under ``ascii`` only)."""


@dataclass(frozen=True)
class DedupVerdict:
    """Whether a candidate is kept, its highest ROUGE-L F1 against the texts kept before it, and which
    text that was, as an index into ``[*existing, *texts]`` (None when every score is 0)."""

    keep: bool
    max_rouge: float
    matched_index: int | None


class _Encoder:
    """Texts to strings of one code point per distinct token (up to 1,114,112 distinct tokens)."""

    def __init__(self, tokens: Callable[[str], list[str]] = rouge_tokens) -> None:
        self.codes: dict[str, str] = {}
        self.tokens = tokens

    def __call__(self, text: str) -> str:
        codes = self.codes
        return "".join([codes.setdefault(token, chr(len(codes))) for token in self.tokens(text)])


def _rouge_l_f1(predictions: list[str], targets: list[str]) -> np.ndarray:
    """ROUGE-L F1 of every encoded prediction (rows) against every encoded target (columns), computed
    with rouge_score's formula and float operation order; 0 where either side has no tokens."""
    lcs = process.cdist(predictions, targets, scorer=LCSseq.similarity, dtype=np.int32)
    prediction_len = np.array([len(p) for p in predictions], dtype=np.int64)[:, None]
    target_len = np.array([len(t) for t in targets], dtype=np.int64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = lcs / prediction_len, lcs / target_len
        return np.where(lcs > 0, 2 * precision * recall / (precision + recall), 0.0)


@dataclass
class _Pool:
    """Encoded kept texts and their indices in ``[*existing, *texts]``."""

    encoded: list[str]
    ids: list[int]

    def decide(self, block: list[str], first_id: int, threshold: float) -> list[DedupVerdict]:
        """Decide consecutive candidates (the first has index ``first_id``); keeps join the pool."""
        # Column 0 stands for "no match", so an all-zero row resolves to it.
        scores = np.hstack([np.zeros((len(block), 1)), _rouge_l_f1(block, self.encoded)])
        best, column = scores.max(axis=1), scores.argmax(axis=1)
        matches = [None, *self.ids]
        within = _rouge_l_f1(block, block)
        kept: list[int] = []
        verdicts = []
        for row in range(len(block)):
            score, match = float(best[row]), matches[column[row]]
            if kept:
                earlier = within[row, kept]
                j = int(earlier.argmax())
                if earlier[j] > score:  # ties go to the pool, which was kept earlier
                    score, match = float(earlier[j]), first_id + kept[j]
            keep = score <= threshold
            verdicts.append(DedupVerdict(keep, score, match))
            if keep:
                kept.append(row)
        self.encoded += [block[row] for row in kept]
        self.ids += [first_id + row for row in kept]
        return verdicts


def dedup_rouge_l_detailed(
    texts: Sequence[str], threshold: float = 0.7, existing: Sequence[str] = (), script: str = "ascii"
) -> list[DedupVerdict]:
    """One verdict per text, in order: kept unless its ROUGE-L F1 (rouge_score, no stemmer; on the tokens of
    ``script``, :data:`SCRIPTS`) against an ``existing`` text or an earlier kept text is strictly greater than
    ``threshold``."""
    encode = _Encoder(SCRIPTS[script])
    pool = _Pool([encode(text) for text in existing], list(range(len(existing))))
    candidates = [encode(text) for text in texts]
    verdicts: list[DedupVerdict] = []
    while len(verdicts) < len(candidates):
        size = max(1, min(_MAX_BLOCK, _BLOCK_CELLS // max(len(pool.encoded), 1)))
        start = len(verdicts)
        verdicts += pool.decide(candidates[start : start + size], len(existing) + start, threshold)
    return verdicts


def dedup_rouge_l(texts: Sequence[str], threshold: float = 0.7, existing: Sequence[str] = ()) -> list[bool]:
    """Keep flags of :func:`dedup_rouge_l_detailed` (True = keep)."""
    return [verdict.keep for verdict in dedup_rouge_l_detailed(texts, threshold, existing)]


def rouge_l_matrix(predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 (rouge_score, no stemmer) of every prediction (rows) against every target (columns)."""
    encode = _Encoder()
    return _rouge_l_f1([encode(text) for text in predictions], [encode(text) for text in targets])


def pairwise_rouge_l(texts: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 (rouge_score, no stemmer) of every text against every other: a symmetric matrix."""
    return rouge_l_matrix(texts, texts)
