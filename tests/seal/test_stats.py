"""The paired bootstrap over contexts."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_mlx.seal.stats import Difference, paired_difference


def test_a_constant_difference_has_a_zero_width_interval():
    a = {"c1": 1.5, "c2": 0.5, "c3": -1.0}
    b = {k: v - 0.25 for k, v in a.items()}
    diff = paired_difference(a, b)
    assert (diff.mean, diff.low, diff.high, diff.n) == pytest.approx((0.25, 0.25, 0.25, 3))
    assert diff.verdict == "higher"


def test_pairing_removes_what_contexts_share():
    # Contexts differ a lot, the two rows by a small steady amount: only a paired comparison sees it.
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1.0, 100)
    a = {f"c{i}": float(v + 0.05 + rng.normal(0, 0.01)) for i, v in enumerate(base)}
    b = {f"c{i}": float(v) for i, v in enumerate(base)}
    diff = paired_difference(a, b)
    assert 0.04 < diff.low < diff.mean < diff.high < 0.06 and diff.verdict == "higher"


def test_interval_matches_the_standard_error_on_noise():
    rng = np.random.default_rng(2)
    d = rng.normal(0.0, 1.0, 400)
    diff = paired_difference({str(i): float(v) for i, v in enumerate(d)}, {str(i): 0.0 for i in range(400)})
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert diff.high - diff.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert diff.low < diff.mean < diff.high


def test_only_contexts_both_rows_score_count_and_none_is_missing():
    diff = paired_difference({"a": 1.0, "b": 2.0, "c": None, "d": 9.0}, {"a": 0.0, "b": 0.0, "c": 1.0})
    assert diff.n == 2 and diff.mean == 1.5
    assert paired_difference({"a": None}, {"a": 1.0}) is None
    assert paired_difference({}, {"a": 1.0}) is None


def test_verdict_words():
    assert Difference(0.1, 0.01, 0.2, 10).verdict == "higher"
    assert Difference(-0.1, -0.2, -0.01, 10).verdict == "lower"
    assert Difference(0.1, -0.01, 0.2, 10).verdict == "no difference"


def test_the_bootstrap_is_seeded():
    a, b = {"x": 1.0, "y": 3.0, "z": 0.0}, {"x": 0.0, "y": 0.0, "z": 0.5}
    assert paired_difference(a, b) == paired_difference(a, b)
