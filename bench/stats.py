"""Statistics for the benchmarks: a median with a confidence interval that assumes nothing
about the distribution, and the verdict it supports against a target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class Estimate(NamedTuple):
    """A median and its confidence interval (`low`..`high`), from `n` values."""

    median: float
    low: float
    high: float
    n: int

    def verdict(self, limit: float) -> str:
        """`met` when the whole interval is at or under `limit`, `missed` when it is all
        above, `undecided` when it straddles the limit (more rounds, or a quieter machine)."""
        if self.high <= limit:
            return "met"
        if self.low > limit:
            return "missed"
        return "undecided"


def median_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The median of `values` and a distribution-free confidence interval for it.

    The interval runs between two order statistics chosen by the binomial distribution
    (each value lies below the true median with probability 1/2); with fewer than 6 values
    no such interval reaches 95%, and it is min..max.
    """
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    n = len(ordered)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    alpha = (1 - confidence) / 2
    # largest k with P(X < k) <= alpha for X ~ Binomial(n, 1/2): the interval is the k-th
    # smallest .. k-th largest value (1-based)
    k, below = 0, 0.0
    while k < n // 2:
        below_next = below + math.comb(n, k) / 2**n
        if below_next > alpha:
            break
        below, k = below_next, k + 1
    if k == 0:
        return Estimate(median, ordered[0], ordered[-1], n)
    return Estimate(median, ordered[k - 1], ordered[n - k], n)


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (`p` in 0..100)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
