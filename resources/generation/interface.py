"""The generation interface every backend implements: sampling settings,
the ``Generator`` protocol, token counts and the progress logger."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from resources.cost.usage import TALLY, running_cost

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters shared by every backend (temperature 0 means greedy)."""

    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    max_new_tokens: int = 64
    n: int = 1
    seed: int = 0


@dataclass(frozen=True)
class GenerationStats:
    """Work done by ``generate`` calls: prompts, completions, prompt tokens (each prompt once), generated tokens
    (up to and including the end-of-sequence token) and wall seconds. A generator's ``stats`` is the running
    total; the difference of two snapshots is what the calls between them did."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall second (0 when no time was spent)."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict[str, int | float]:
        """The counts plus ``tokens_per_second``, as plain numbers (for asset metadata)."""
        rounded = {"seconds": round(self.seconds, 3), "tokens_per_second": round(self.tokens_per_second, 2)}
        return {**asdict(self), **rounded}


def counted(stats: GenerationStats) -> GenerationStats:
    """``stats`` of one batch, also added to the process's usage tally (:data:`resources.cost.usage.TALLY`)."""
    TALLY.add(tokens_in=stats.prompt_tokens, tokens_out=stats.generated_tokens)
    return stats


class Generator(Protocol):
    """Anything that turns prompts into ``n`` completions each; ``tokenizer`` applies the model's chat template;
    ``stats`` counts the tokens and time of every call so far."""

    tokenizer: PreTrainedTokenizerBase
    stats: GenerationStats

    def generate(
        self, prompts: list[str], params: SamplingParams, progress: Progress | None = None
    ) -> list[list[str]]:
        """Return, for each prompt, ``params.n`` completions (prompt text excluded)."""
        ...

    def batch_prompts(self, params: SamplingParams) -> int:
        """How many consecutive prompts of a call are sampled together (``params.seed`` + their offset in the call
        seeds the group): a group's completions depend on its own prompts and seed only, so a cache can keep it."""
        ...


def rate_logger(logger: Callable[[str], None], label: str) -> Progress:
    """A progress callback that logs done/total, rate and ETA, and the running stage's cost so far (seconds and
    tokens, when the stage is metered: :func:`resources.cost.usage.running_cost`)."""
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        logger(f"{label}: {done}/{total} done, {rate:.2f}/s, ETA {eta:.0f} s{running_cost()}")

    return report
