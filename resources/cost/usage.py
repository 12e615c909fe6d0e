"""What one stage used: wall, CPU and accelerator seconds, peak memory, tokens and examples.

Engines count their work into the process-wide :data:`TALLY` as they go (a generator the tokens of each batch, the
warm-up the tokens of each optimizer step, a cache what it served instead of recomputing); a :class:`Meter` opened
around a stage reads the tally's difference and the process's clocks and memory, so nothing is passed up through
return values and a progress line can show the running cost at any moment (:func:`running_cost`). A step runs in
one process at a time (in-process executor: one after the other; multiprocess and k8s: a process each), so the
difference of the tally over a stage is that stage's work.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

import psutil
import torch

COUNTS = ("tokens_in", "tokens_out", "tokens_trained", "reused_examples")
"""What engines count: prompt tokens sent to a generator (each prompt once), tokens generated (up to and
including the end-of-sequence token), tokens a training step saw (every input token of every example of every
step or epoch; DPO: chosen and rejected), and examples served from a cache instead of being computed again."""


class Tally:
    """Running totals of :data:`COUNTS` in this process (thread-safe)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        """Add to some of the counts (names from :data:`COUNTS`)."""
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise ValueError(f"unknown usage counts {sorted(unknown)}; known: {COUNTS}")
        with self._lock:
            self._counts.update({name: int(value) for name, value in counts.items()})

    def snapshot(self) -> dict[str, int]:
        """The current totals."""
        with self._lock:
            return {name: self._counts[name] for name in COUNTS}


TALLY = Tally()


@dataclass(frozen=True)
class Usage:
    """One stage's (or step's) resource use. ``accelerator_seconds`` is the stage's wall time on a CUDA device
    (what a GPU hour bills: the stage holds the device while it runs), 0 on CPU; ``peak_accelerator_mb`` the peak
    memory torch allocated on it; ``peak_rss_mb`` the peak resident memory of the process and its children
    (sampled every 0.2 s); ``cpu_seconds`` user plus system time of the process and of the child processes it
    waited for (``accelerate launch``). ``examples`` is what the stage handled (rows, candidates, pairs, examples
    trained on), cached ones included; ``reused_examples`` how many of them came from a cache."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    accelerator_seconds: float = 0.0
    peak_accelerator_mb: float = 0.0
    peak_rss_mb: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_trained: int = 0
    examples: int = 0
    reused_examples: int = 0

    @property
    def examples_per_second(self) -> float:
        """Examples handled per wall second (0 when no time was spent)."""
        return self.examples / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def reused(self) -> bool:
        """Whether any of the stage's work was served from a cache."""
        return self.reused_examples > 0

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ``examples_per_second``, rounded for display and metadata."""
        values = {name: round(value, 3) if isinstance(value, float) else value for name, value in asdict(self).items()}
        return {**values, "examples_per_second": round(self.examples_per_second, 3)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Usage:
        """A usage from :meth:`as_dict`'s keys (others ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if values.get(f.name) is not None})

    def __add__(self, other: Usage) -> Usage:
        """Two steps of one stage: times and counts add up, peaks take the larger."""
        peaks = {"peak_accelerator_mb", "peak_rss_mb"}
        return Usage(**{
            f.name: max(getattr(self, f.name), getattr(other, f.name)) if f.name in peaks
            else getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
        })


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rss_bytes(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # the child ended between listing and reading
            continue
    return total


class Meter:
    """Measures one stage from :meth:`__enter__` to :meth:`__exit__`; :meth:`usage` reads it at any moment.

    ``device``: the torch device the stage's models run on (CUDA: accelerator seconds and peak memory are
    measured; None: a stage that runs no model). ``examples`` is set by the stage (:meth:`count`)."""

    active: Meter | None = None  # the meter of the stage running in this process, for progress lines

    def __init__(self, device: torch.device | str | None = None, sample_seconds: float = 0.2) -> None:
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.sample_seconds = sample_seconds
        self.examples = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._peak_rss = 0
        self._sampler = threading.Thread(target=self._sample, name="usage-sampler", daemon=True)

    def __enter__(self) -> Meter:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._started, self._cpu, self._counts = time.perf_counter(), _cpu_seconds(), TALLY.snapshot()
        self._peak_rss = _rss_bytes(self._process)
        self._sampler.start()
        Meter.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        if Meter.active is self:
            Meter.active = None

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_seconds):
            try:
                self._peak_rss = max(self._peak_rss, _rss_bytes(self._process))
            except psutil.Error:  # pragma: no cover - the process is going away
                return

    def count(self, examples: int) -> None:
        """Record how many examples the stage handled."""
        self.examples += examples

    def usage(self) -> Usage:
        """What the stage used so far."""
        wall = time.perf_counter() - self._started
        self._peak_rss = max(self._peak_rss, _rss_bytes(self._process))
        counts = TALLY.snapshot()
        return Usage(
            wall_seconds=wall,
            cpu_seconds=_cpu_seconds() - self._cpu,
            accelerator_seconds=wall if self.cuda else 0.0,
            peak_accelerator_mb=torch.cuda.max_memory_allocated() / 2**20 if self.cuda else 0.0,
            peak_rss_mb=self._peak_rss / 2**20,
            examples=self.examples,
            **{name: counts[name] - self._counts[name] for name in COUNTS},
        )


def running_cost() -> str:
    """The running stage's seconds and tokens so far (empty when no stage is metered in this process)."""
    meter = Meter.active
    if meter is None:
        return ""
    usage = meter.usage()
    tokens = usage.tokens_in + usage.tokens_out + usage.tokens_trained
    return f"; stage {usage.wall_seconds:.0f} s, {usage.cpu_seconds:.0f} CPU s, {tokens:,} tokens"
