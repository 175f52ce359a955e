"""A learning-rate rule across widths, lr(d) = lr_ref * (d_ref / d)^k, from an lr probe at two widths."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np


def best_lr(points: list[tuple[float, float]]) -> float:
    """The lr minimising a parabola in log2(lr) through the lowest-loss point and its neighbours.

    The optimum stays between those neighbours; a minimum at the edge of the probe is returned as is, since
    nothing brackets it.
    """
    if not points:
        raise ValueError("no (lr, loss) points")
    points = sorted(points)
    i = min(range(len(points)), key=lambda j: points[j][1])
    if i == 0 or i == len(points) - 1:
        return points[i][0]
    xs = [math.log2(lr) for lr, _ in points[i - 1:i + 2]]
    a, b, _ = np.polyfit(xs, [loss for _, loss in points[i - 1:i + 2]], 2)
    x = -b / (2 * a) if a > 0 else xs[1]
    return 2.0 ** min(max(x, xs[0]), xs[2])


@dataclass(frozen=True)
class LrRule:
    """lr(d) = lr_ref * (d_ref / d)^exponent."""

    d_ref: int
    lr_ref: float
    exponent: float

    def lr(self, d_model: int) -> float:
        """The rule's learning rate at width d_model."""
        return self.lr_ref * (self.d_ref / d_model) ** self.exponent


def fit_lr_rule(rows: list[dict[str, Any]], loss: str = "final_val_loss") -> tuple[LrRule, dict[int, list]]:
    """The rule through the best lr of each of exactly two widths, from finished sweep-summary rows.

    Returns the rule (whose lr at either width is that width's best lr) and the probed (lr, loss) per width.
    """
    by_width: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row.get("status") == "done" and isinstance(row.get(loss), (int, float)):
            by_width[int(row["model.d_model"])].append((float(row["optim.lr"]), float(row[loss])))
    if len(by_width) != 2:
        raise ValueError(f"need finished runs at exactly two widths, found {sorted(by_width)}")
    small, large = sorted(by_width)
    lr_small, lr_large = best_lr(by_width[small]), best_lr(by_width[large])
    exponent = math.log(lr_small / lr_large) / math.log(large / small)
    return LrRule(d_ref=large, lr_ref=lr_large, exponent=exponent), dict(by_width)
