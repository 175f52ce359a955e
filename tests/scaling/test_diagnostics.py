"""Residuals per run, leave-one-out sensitivity and predictions with intervals, on data from known laws."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_mlx.scaling.diagnostics import leave_one_out, predict_runs, residuals
from tinygpt_mlx.scaling.fit import LAWS, fit_law, predict

TRUE = {"E": 1.2, "A": 40.0, "alpha": 0.35}
X = np.geomspace(2e4, 5e6, 7)
NAMES = [f"r{i}" for i in range(len(X))]


def test_residuals_are_measured_over_fitted_per_run():
    loss = predict(LAWS["N"], TRUE, X)
    fit = fit_law("N", X, loss, n_bootstrap=0)
    rows = residuals(fit, NAMES)
    assert [r["name"] for r in rows] == NAMES
    assert [r["N"] for r in rows] == pytest.approx(X.tolist())
    assert [r["residual_pct"] for r in rows] == pytest.approx([0.0] * len(X), abs=1e-6)
    assert [r["fitted"] for r in rows] == pytest.approx(loss.tolist(), rel=1e-8)


def test_leave_one_out_names_the_run_that_moves_the_fit_most():
    loss = predict(LAWS["N"], TRUE, X)
    loss[0] *= 1.04  # the smallest run 4% off the law (an end run: the Huber loss shrugs off middle ones)
    fit = fit_law("N", X, loss, n_bootstrap=0)
    loo = leave_one_out(fit, NAMES)
    assert len(loo["refits"]) == len(X) and loo["essential"] == []
    # Without the bad run the remaining six lie exactly on the law.
    without_bad = next(r["params"] for r in loo["refits"] if r["name"] == "r0")
    assert without_bad == pytest.approx(TRUE, rel=1e-4)
    assert loo["most_influential"]["alpha"]["name"] == "r0"
    assert loo["most_influential"]["alpha"]["shift"] == pytest.approx(TRUE["alpha"] - fit.params["alpha"])
    assert loo["range"]["alpha"] == pytest.approx([TRUE["alpha"], max(r["params"]["alpha"] for r in loo["refits"])])


def test_leave_one_out_reports_runs_the_law_cannot_do_without():
    x = X[[0, 0, 1, 2]]  # two seeds at the smallest size, one run at each of two more
    fit = fit_law("N", x, predict(LAWS["N"], TRUE, x), n_bootstrap=0)
    loo = leave_one_out(fit, ["a", "b", "c", "d"])
    assert [r["name"] for r in loo["refits"]] == ["a", "b"]
    assert [e["name"] for e in loo["essential"]] == ["c", "d"]
    assert "only 2 distinct values of N" in loo["essential"][0]["reason"]


def test_predictions_carry_the_law_interval_and_a_wider_one_for_a_single_run():
    rng = np.random.default_rng(4)
    loss = predict(LAWS["N"], TRUE, X) * np.exp(rng.normal(0, 0.005, len(X)))
    fit = fit_law("N", X, loss, n_bootstrap=60, seed=0)
    new_x = np.array([1e7, 2e7])
    truth = predict(LAWS["N"], TRUE, new_x)
    rows = predict_runs(fit, new_x, truth, seed=0)
    for row, x, measured in zip(rows, new_x, truth, strict=True):
        assert row["N"] == x and row["measured"] == measured
        assert row["predicted"] == pytest.approx(fit.predict(np.array([x]))[0])
        assert row["error_pct"] == pytest.approx(100 * (row["predicted"] / measured - 1))
        (clo, chi), (plo, phi) = row["ci95"], row["pi95"]
        assert clo <= row["predicted"] <= chi and plo <= row["predicted"] <= phi
        assert phi - plo > chi - clo  # a single run's scatter widens the law's interval
        assert row["inside_pi95"] and abs(row["error_pct"]) < 1.0
    assert predict_runs(fit, new_x, truth, seed=0) == rows  # seeded


def test_predictions_without_bootstrap_have_no_interval():
    fit = fit_law("N", X, predict(LAWS["N"], TRUE, X), n_bootstrap=0)
    (row,) = predict_runs(fit, np.array([1e7]), np.array([2.0]))
    assert "ci95" not in row and "inside_pi95" not in row
    assert row["predicted"] == pytest.approx(predict(LAWS["N"], TRUE, np.array([1e7]))[0], rel=1e-6)
