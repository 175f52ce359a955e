"""Scaling-law fits: parameter recovery with intervals, seeded bootstrap, closed-form optimum, refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.fit import LAWS, compute_optimal, fit_law, predict

# (law, true parameters, x grid): values in the range a char-level TinyStories sweep would see.
ONE_VARIABLE = [
    ("N", {"E": 1.2, "A": 40.0, "alpha": 0.35}, np.geomspace(2e4, 5e6, 12)),
    ("D", {"E": 1.0, "B": 60.0, "beta": 0.3}, np.geomspace(1e6, 1e9, 12)),
    ("C", {"E": 1.1, "K": 300.0, "gamma": 0.15}, np.geomspace(1e12, 1e16, 12)),
]


def _noisy(law_key: str, params: dict[str, float], x: np.ndarray, seed: int, sigma: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return predict(LAWS[law_key], params, x) * np.exp(rng.normal(0.0, sigma, len(x)))


@pytest.mark.parametrize(("law", "true", "x"), ONE_VARIABLE, ids=[c[0] for c in ONE_VARIABLE])
def test_one_variable_law_recovers_parameters_inside_intervals(law, true, x):
    fit = fit_law(law, x, _noisy(law, true, x, seed=3), n_bootstrap=40, seed=0)
    for name, value in true.items():
        lo, hi = fit.ci95[name]
        assert lo <= value <= hi, (name, value, fit.ci95[name])
    exponent = LAWS[law].terms[0][1]
    assert fit.params[exponent] == pytest.approx(true[exponent], abs=0.05)
    assert fit.r2_log > 0.98


def test_joint_law_recovers_parameters_inside_intervals():
    true = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}  # Hoffmann et al.'s fit
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5))
    x = np.column_stack([n.ravel(), d.ravel()])
    fit = fit_law("ND", x, _noisy("ND", true, x, seed=5), n_bootstrap=20, seed=0)
    for name, value in true.items():
        lo, hi = fit.ci95[name]
        assert lo <= value <= hi, (name, value, fit.ci95[name])
    assert fit.params["alpha"] == pytest.approx(0.34, abs=0.03)
    assert fit.params["beta"] == pytest.approx(0.28, abs=0.03)


def test_exact_data_fits_exactly():
    true = {"E": 1.5, "A": 20.0, "alpha": 0.5}
    x = np.geomspace(1e4, 1e7, 6)
    fit = fit_law("N", x, predict(LAWS["N"], true, x), n_bootstrap=0)
    assert fit.params == pytest.approx(true, rel=1e-4)
    assert fit.r2_log == pytest.approx(1.0, abs=1e-9)
    assert fit.ci95 == {}


def test_bootstrap_is_reproducible_with_a_seed():
    law, true, x = ONE_VARIABLE[0]
    loss = _noisy(law, true, x, seed=3)
    first = fit_law(law, x, loss, n_bootstrap=8, seed=7)
    again = fit_law(law, x, loss, n_bootstrap=8, seed=7)
    other = fit_law(law, x, loss, n_bootstrap=8, seed=8)
    assert first.ci95 == again.ci95
    np.testing.assert_array_equal(first.samples, again.samples)
    assert first.samples.shape == (8, 3)
    assert first.ci95 != other.ci95


def test_compute_optimal_closed_form_minimises_loss_on_the_iso_flop_line():
    params = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
    c = 1e21
    opt = compute_optimal(params, [c])
    n_opt, d_opt = float(opt["N_opt"][0]), float(opt["D_opt"][0])
    assert 6 * n_opt * d_opt == pytest.approx(c, rel=1e-9)
    assert float(opt["a"]) == pytest.approx(0.28 / 0.62)
    # A brute-force search along C = 6 N D lands on the same N.
    n_grid = np.geomspace(n_opt / 30, n_opt * 30, 20001)
    loss = predict(LAWS["ND"], params, np.column_stack([n_grid, c / (6 * n_grid)]))
    assert n_grid[np.argmin(loss)] == pytest.approx(n_opt, rel=1e-3)


@pytest.mark.parametrize(
    ("law", "x", "loss", "message"),
    [
        ("N", [1e4, 1e5], [2.0, 1.8], "law N has 3 parameters but only 2 runs were given"),
        ("ND", [[1e4, 1e6], [1e5, 1e6], [1e6, 1e7], [1e7, 1e8]], [3, 2, 1.5, 1.2],
         "law ND has 5 parameters but only 4 runs were given"),
        ("N", [1e4, 1e5, 1e6], [2.0, 0.0, 1.5], "every loss must be a positive finite number, got 0"),
        ("D", [1e4, 1e5, 1e6], [2.0, float("nan"), 1.5], "every loss must be a positive finite number, got nan"),
        ("C", [1e4, -1e5, 1e6], [2.0, 1.8, 1.5], "every C must be a positive finite number, got -100000"),
        ("N", [1e5, 1e5, 1e5, 1e5], [2.0, 1.9, 2.1, 2.0], "all runs share a single N = 100000"),
        ("ND", [[1e4, 1e6], [1e5, 1e6], [1e6, 1e6], [1e7, 1e6], [1e8, 1e6]], [3, 2, 1.5, 1.2, 1.1],
         "all runs share a single D = 1e+06"),
        ("Q", [1, 2, 3], [1, 2, 3], "unknown law 'Q'"),
    ],
)
def test_degenerate_inputs_are_refused_with_a_clear_message(law, x, loss, message):
    with pytest.raises(UserError, match=re.escape(message)):
        fit_law(law, x, loss, n_bootstrap=5)
