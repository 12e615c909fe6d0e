"""Paired statistics of a controlled experiment: per-arm summaries, paired differences with t intervals, p-values
and effect sizes, and the smallest detectable effect for a number of replicates."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

BETTER = ("lower", "higher")


@dataclass(frozen=True)
class Metric:
    """One measured quantity per (arm, replicate); ``better`` says which direction is an improvement."""

    name: str
    description: str
    better: str = "lower"

    def __post_init__(self) -> None:
        if self.better not in BETTER:
            raise ValueError(f"metric {self.name}: better must be one of {BETTER}, got {self.better!r}")


@dataclass(frozen=True)
class Summary:
    """Count, mean and sample standard deviation (None below two values) of one arm's metric."""

    n: int
    mean: float
    sd: float | None


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values`` (at least one)."""
    if not values:
        raise ValueError("cannot summarize no values")
    return Summary(len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class PairedDifference:
    """``treatment − control`` paired by replicate, with its t-interval, paired t-test and Cohen's d_z.
    With fewer than two pairs nothing but the mean is defined; with no spread the interval is the point and
    the test and d_z are undefined (None)."""

    replicates: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    p_value: float | None
    d_z: float | None
    confidence: float


def paired_difference(
    treatment: Mapping[int, float], control: Mapping[int, float], confidence: float = 0.95
) -> PairedDifference:
    """Pair the replicates both arms have and compare them."""
    replicates = tuple(sorted(set(treatment) & set(control)))
    if not replicates:
        raise ValueError("no replicate has values for both arms")
    diffs = tuple(treatment[r] - control[r] for r in replicates)
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return PairedDifference(replicates, diffs, mean, None, None, None, None, None, None, confidence)
    sd = statistics.stdev(diffs)
    if sd == 0:
        return PairedDifference(replicates, diffs, mean, 0.0, mean, mean, None, None, None, confidence)
    standard_error = sd / math.sqrt(n)
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * standard_error
    t = mean / standard_error
    p_value = float(2 * stats.t.sf(abs(t), n - 1))
    return PairedDifference(replicates, diffs, mean, sd, mean - half_width, mean + half_width, t, p_value,
                            mean / sd, confidence)


def detectable_effect(replicates: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest Cohen's d_z a two-sided paired t-test at ``alpha`` detects with ``power`` for ``replicates``
    pairs (noncentral t); inf when even d_z = 20 is not enough, or with fewer than two pairs (no test)."""
    if replicates < 2:
        return math.inf
    df = replicates - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(d: float) -> float:
        shift = d * math.sqrt(replicates)
        wrong_side = np.nan_to_num(stats.nct.cdf(-critical, df, shift))  # vanishing; scipy gives nan far out
        return stats.nct.sf(critical, df, shift) + wrong_side - power

    if shortfall(20.0) < 0:
        return math.inf
    return float(optimize.brentq(shortfall, 1e-6, 20.0))
