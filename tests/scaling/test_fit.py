"""Scaling-law fits: parameter recovery with intervals, seeded bootstrap, closed-form optimum, refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tinygpt_mlx.scaling.fit as fit_module
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


# Each defect below was found by checking fit.py against data from known laws; each test failed before its fix.

@pytest.mark.parametrize(
    ("law", "x", "message"),
    [
        # Four runs but two widths: E, A and alpha cannot all be pinned by two levels.
        ("N", [1e4, 1e4, 1e5, 1e5], "only 2 distinct values of N (10000, 100000)"),
        # Six runs at four distinct (N, D) points for five parameters.
        ("ND", [[1e4, 1e6], [1e4, 1e6], [1e5, 1e7], [1e5, 1e7], [1e6, 1e8], [1e4, 1e8]],
         "the runs give only 4 distinct (N, D) points; it needs at least 5"),
        # D = 20 N in every run: the N and D terms trade off freely.
        ("ND", [[n, 20 * n] for n in np.geomspace(1e5, 1e8, 8)], "N and D vary together"),
    ],
)
def test_enough_runs_means_enough_distinct_points(law, x, message):
    x = np.asarray(x, dtype=float)
    true = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
    params = true if law == "ND" else {k: true[k] for k in ("E", "A", "alpha")}
    loss = predict(LAWS[law], params, x) * np.exp(np.random.default_rng(0).normal(0, 0.01, len(x)))
    with pytest.raises(UserError, match=re.escape(message)):
        fit_law(law, x, loss, n_bootstrap=5)


def test_an_exactly_determined_fit_gets_no_interval_rather_than_a_zero_width_one():
    x = np.array([1e4, 1e5, 1e6])
    fit = fit_law("N", x, predict(LAWS["N"], {"E": 1.0, "A": 20.0, "alpha": 0.3}, x), n_bootstrap=20)
    assert fit.params["alpha"] == pytest.approx(0.3, rel=1e-6)
    assert fit.ci95 == {} and fit.n_bootstrap == 0
    assert fit.notes == ["no intervals: 3 distinct points for 3 parameters fit exactly; add runs at new points"]


def test_bootstrap_replicates_without_a_usable_resample_are_dropped_not_used(monkeypatch):
    # Four runs at four widths: about 3 in 4 resamples hold fewer than three distinct widths. With one draw
    # allowed per replicate, most replicates find none and must be left out.
    monkeypatch.setattr(fit_module, "MAX_REDRAWS", 1)
    law, true, _ = ONE_VARIABLE[0]
    x = np.geomspace(2e4, 5e6, 4)
    fit = fit_law(law, x, _noisy(law, true, x, seed=3), n_bootstrap=40, seed=0)
    assert 0 < fit.dropped < 40
    assert fit.n_bootstrap == 40 - fit.dropped == len(fit.samples)
    assert fit.redrawn == fit.dropped  # one failed draw per dropped replicate, no retries
    assert f"bootstrap: {fit.dropped} of 40 replicates found no resample" in fit.notes[0]
    # Every kept replicate was fitted to a resample that determines the law, so it stays near the truth.
    assert np.all(np.abs(fit.samples[:, 2] - true["alpha"]) < 0.2)


@pytest.mark.parametrize(
    ("x", "loss", "name", "note"),
    [
        # Flat loss: no decrease with N, the exponent runs to 0.
        (np.geomspace(1e4, 1e6, 6), [2.0, 2.01, 1.99, 2.0, 2.01, 1.99], "alpha", "sits at its lower bound 0"),
        # A pure power law without an irreducible term: E runs to 0.
        (np.geomspace(1e4, 1e7, 8), 30.0 * np.geomspace(1e4, 1e7, 8) ** -0.3, "E", "sits at its lower bound 0"),
        # A step between the two smallest runs: the exponent runs to its upper bound.
        (np.geomspace(1e4, 1e6, 6), [3.0, 2.0, 2.0, 2.0, 2.0, 2.0], "alpha", "sits at its upper bound 10"),
    ],
    ids=["flat", "no-floor", "step"],
)
def test_a_parameter_at_a_bound_is_flagged(x, loss, name, note):
    fit = fit_law("N", x, loss, n_bootstrap=10)
    assert name in fit.at_bound
    assert any(n.startswith(f"{name} = ") and note in n for n in fit.notes), fit.notes


def test_a_fit_inside_its_bounds_has_no_bound_notes():
    law, true, x = ONE_VARIABLE[0]
    fit = fit_law(law, x, _noisy(law, true, x, seed=3), n_bootstrap=20)
    assert fit.at_bound == [] and fit.notes == [] and fit.bootstrap_at_bound == {}
