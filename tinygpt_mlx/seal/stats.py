"""Paired bootstrap over contexts: the mean difference of two table rows and its 95% percentile interval.

Every row is scored on the same held-out contexts with the same random numbers, so two rows are compared
context by context: the differences are resampled with replacement (contexts are the unit of the
experiment), and the 2.5th and 97.5th percentiles of the resampled means bound the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Difference:
    """mean(a - b) over the n contexts both rows score, with its 95% bootstrap interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> str:
        """`higher` or `lower` when the interval excludes 0, else `no difference`."""
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "no difference"


def paired_difference(a: dict[str, float | None], b: dict[str, float | None],
                      samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> Difference | None:
    """a - b over the contexts where both have a value; None when there are none."""
    keys = sorted(k for k in a.keys() & b.keys() if a[k] is not None and b[k] is not None)
    if not keys:
        return None
    diffs = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(samples, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Difference(float(diffs.mean()), float(low), float(high), len(keys))
