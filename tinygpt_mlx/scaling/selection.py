"""Which runs each law is fitted to, on a sweep that varies N, D or both.

L(N) holds D fixed and L(D) holds N fixed, so on an N x D grid each is fitted to one slice: the largest D
(or N) with runs at four or more distinct sizes (budgets), which gives intervals, else at three. L(C) describes the best loss a
compute budget can buy, so it is fitted to the compute-efficient frontier: the runs that no run of at most
their compute beats. The joint L(N, D) takes every run. On a one-axis sweep every rule keeps every run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.fit import LAWS, MIN_VALUES, check_points

OTHER = {"N": "D", "D": "N"}


def select(law_key: str, points: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The points ({name, N, D, C, loss}) law_key is fitted to, and a sentence saying which and why."""
    if law_key == "ND":
        return points, "every run"
    if law_key == "C":
        front = frontier(points)
        return front, f"the compute-efficient frontier ({len(front)} of {len(points)} runs)"
    return _slice(law_key, points)


def frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs with a lower loss than every run of less or equal compute, in order of compute."""
    best, out = np.inf, []
    for p in sorted(points, key=lambda p: (p["C"], p["loss"])):
        if p["loss"] < best:
            out.append(p)
            best = p["loss"]
    return out


def _slice(var: str, points: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    fixed = OTHER[var]
    levels = sorted({p[fixed] for p in points}, reverse=True)
    # One more distinct value than the law has parameters gives bootstrap intervals; exactly as many only a fit.
    for need in (MIN_VALUES + 1, MIN_VALUES):
        for level in levels:
            chosen = [p for p in points if p[fixed] == level]
            if len({p[var] for p in chosen}) >= need:
                rule = "every run" if len(levels) == 1 else \
                    f"the runs at {fixed} = {level:.4g}, the largest {fixed} with {need} or more distinct {var}"
                return chosen, rule
    if len(levels) == 1:
        return points, "every run"
    law = LAWS[var]
    # The runs as a whole may fail for a plainer reason (a single value of var): say that one first.
    check_points(law, np.array([[p[var]] for p in points]), np.array([p["loss"] for p in points]))
    raise UserError(f"law {var}: no {fixed} has runs at {MIN_VALUES} or more distinct {var}; L({var}) holds "
                    f"{fixed} fixed, so it needs a sweep over {var} at one {fixed}")
