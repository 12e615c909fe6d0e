"""Is an instruction on the task? The measure behind the effect experiment's on-task share: the built-in arithmetic
rule (below) or a rule the user gives for their own task (:func:`on_task_rule`: a keyword list or a regular
expression).

An arithmetic word problem states quantities and asks for a quantity computed from them, so an
instruction counts as on-task when it holds numbers and a computation cue:

- at least one number and an *operation* cue: an arithmetic word (plus, times, divided, percent,
  average, fraction, prime, "adds up to", "rose by", calculate, solve, ...) or an operator symbol; or
- a *quantity question* (how many / how much / how far / how long / how old, what time, total, left
  over, cost, earn, spend, area, perimeter, speed) about at least two numbers or one measured quantity
  (a number with a unit: 3.5 hours, 36 centimeters, 2 liters).

Numbers are digit runs (``3/8`` is two, ``2.5`` one) and the number words two to twelve, the tens,
hundred, thousand, dozen, half, twice, double and triple ("one" is left out: "write one sentence").

Why a rule and not ROUGE-L against the reference set: ROUGE-L between short instructions is dominated by
function words ("what is the"), so its threshold would be arbitrary, and a teacher that copied the
reference set's phrasing without its arithmetic would score as on-task. The rule is transparent,
deterministic and cheap. Its misses are of known kinds: a quantity question about one bare number ("how
long should 2 eggs boil") and math without numbers ("the sum of a triangle's angles") are off; "list 3
ways to save 10 percent" is on. The cue lists were completed by looking at the misses on the project's
math data (now: 23 of 24 reference and 59 of 59 held-out math pairs on-task; 3 of 40 general seed
prompts, all of them arithmetic or primes); tests check it on other, hand-written cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_NUMBER_WORDS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty",
    "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "dozen",
    "half", "twice", "double", "triple",
)  # fmt: skip
NUMBER = re.compile(r"\d+(?:\.\d+)?|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
UNITS = (
    "dollars?", "cents?", "percent", "degrees?", "seconds?", "minutes?", "hours?", "days?", "weeks?", "months?",
    "years?", "millimeters?", "centimeters?", "meters?", "kilometers?", "inches", "inch", "feet", "foot", "miles?",
    "milliliters?", "liters?", "grams?", "kilograms?", "pounds?",
)  # fmt: skip
MEASURE = re.compile(r"\d+(?:\.\d+)?[\s-]*(?:" + "|".join(UNITS) + r")\b", re.IGNORECASE)
OPERATION = re.compile(
    r"[+×÷=%*]|(?<=\d)\s*[-/x]\s*(?=\d)|\b(?:plus|minus|times|multipl(?:y|ied|ication)|divided?|division|"
    r"sum|difference|product|quotient|remainder|percent(?:age)?|average|ratio|fraction|square root|squared|"
    r"calculate|compute|solve|equation|prime|divisible|next number|adds? up to|"
    r"(?:rose|rises|fell|falls|increased?|decreased?) by)\b",
    re.IGNORECASE,
)
QUANTITY_QUESTION = re.compile(
    r"\bhow (?:many|much|far|long|old)\b|\bwhat time\b|\b(?:total|altogether|in all|left over|are left|is left|"
    r"costs?|earns?|spends?|area|perimeter|speed)\b",
    re.IGNORECASE,
)


def is_on_task(instruction: str) -> bool:
    """Whether ``instruction`` reads as an arithmetic problem (see the module docstring for the rule)."""
    numbers = len(NUMBER.findall(instruction))
    if numbers >= 1 and OPERATION.search(instruction):
        return True
    quantities = numbers >= 2 or MEASURE.search(instruction) is not None
    return quantities and QUANTITY_QUESTION.search(instruction) is not None


ARITHMETIC = "arithmetic"
RULE_FORMS = (ARITHMETIC, "keywords: WORD, WORD, ...", "regex: PATTERN")


def on_task_rule(spec: str) -> Callable[[str], bool]:
    """The on-task test named by ``spec``: ``arithmetic`` (:func:`is_on_task`); ``keywords: a, b c, d`` (on task
    when the instruction holds any of the comma-separated words or phrases as whole words, any case); ``regex:
    PATTERN`` (on task when the pattern matches anywhere, any case). Raises ValueError naming the forms otherwise."""
    kind, _, body = spec.partition(":")
    kind, body = kind.strip().lower(), body.strip()
    if kind == ARITHMETIC and not body:
        return is_on_task
    if kind == "keywords":
        words = [word.strip() for word in body.split(",") if word.strip()]
        if not words:
            raise ValueError(f"on-task rule {spec!r}: give at least one keyword after 'keywords:'")
        pattern = r"(?<!\w)(?:" + "|".join(re.escape(word) for word in words) + r")(?!\w)"
        return re.compile(pattern, re.IGNORECASE).search  # type: ignore[return-value]
    if kind == "regex":
        try:
            return re.compile(body, re.IGNORECASE).search  # type: ignore[return-value]
        except re.error as exc:
            raise ValueError(f"on-task rule {spec!r}: not a valid regular expression ({exc})") from None
    raise ValueError(f"unknown on-task rule {spec!r}; use one of: {', '.join(RULE_FORMS)}")


def on_task_share(instructions: Iterable[str], rule: Callable[[str], bool] = is_on_task) -> float:
    """Share of ``instructions`` that ``rule`` accepts (0 for none); by default the arithmetic rule."""
    verdicts = [bool(rule(text)) for text in instructions]
    return sum(verdicts) / len(verdicts) if verdicts else 0.0
