"""Each law is fitted to the runs it describes: L(N) at one D, L(D) at one N, L(C) on the compute frontier."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.analyze import fit_results
from tinygpt_mlx.scaling.fit import LAWS, predict
from tinygpt_mlx.scaling.selection import frontier, select

TRUE = {"E": 1.5, "A": 40.0, "alpha": 0.35, "B": 60.0, "beta": 0.3}


def _grid(n_range=(1e5, 3e6), d_range=(3e5, 1e7), sizes: int = 6, budgets: int = 6, sigma: float = 0.003,
          seed: int = 0) -> list[dict]:
    """Runs on an N x D grid from the joint law TRUE, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(np.geomspace(*n_range, sizes)):
        for j, d in enumerate(np.geomspace(*d_range, budgets)):
            loss = predict(LAWS["ND"], TRUE, np.array([[n, d]]))[0] * np.exp(rng.normal(0, sigma))
            rows.append({"name": f"s{i}_b{j}", "status": "done", "non_embedding_params": n, "tokens_seen": d,
                         "final_val_loss": loss})
    return rows


def test_on_an_n_by_d_grid_each_one_variable_law_gets_its_slice_and_its_true_exponent(tmp_path):
    # Fitted to every run, L(N) ignored D: R² 0.25 and alpha anywhere in [0.01, 10]. At one D the law in N is
    # exactly E' + A N^-alpha with E' = E + B D^-beta, so the slice recovers alpha (and L(D) beta).
    n_law, d_law = (fit_results(_grid(), tmp_path, law=law, n_bootstrap=30, say=lambda _: None)["laws"][law]
                    for law in ("N", "D"))
    assert n_law["selection"]["runs"] == [f"s{i}_b5" for i in range(6)]
    assert n_law["selection"]["rule"] == "the runs at D = 1e+07, the largest D with 4 or more distinct N"
    assert d_law["selection"]["runs"] == [f"s5_b{j}" for j in range(6)]
    for law, expo in ((n_law, "alpha"), (d_law, "beta")):
        lo, hi = law["ci95"][expo]
        assert lo <= TRUE[expo] <= hi and hi - lo < 0.3
        assert law["r2_log"] > 0.99
    e_at_largest_d = TRUE["E"] + TRUE["B"] * 1e7 ** -TRUE["beta"]
    assert n_law["params"]["E"] == pytest.approx(e_at_largest_d, rel=0.02)


def test_l_of_c_is_fitted_to_the_compute_efficient_frontier(tmp_path):
    # A grid wide enough that the compute-optimal size lies inside it over most of its compute range.
    rows = _grid(n_range=(1e4, 1e6), d_range=(1e5, 1e8), sigma=0.0)
    report = fit_results(rows, tmp_path, law="C", n_bootstrap=0, say=lambda _: None)
    c_law = report["laws"]["C"]
    front = c_law["selection"]["runs"]
    assert c_law["selection"]["rule"] == f"the compute-efficient frontier ({len(front)} of 36 runs)"
    assert 8 <= len(front) < len(rows)
    # No run of at most a frontier run's compute has a lower loss.
    points = {r["name"]: (6 * r["non_embedding_params"] * r["tokens_seen"], r["final_val_loss"]) for r in rows}
    for name in front:
        c, loss = points[name]
        assert all(other_loss >= loss for other_c, other_loss in points.values() if other_c <= c)
    # Along the optimal allocation L - E falls as C^-(alpha beta / (alpha + beta)); the frontier follows it
    # (fitted to all 36 runs instead: gamma 0.123, E 1.12, R² 0.94).
    gamma = TRUE["alpha"] * TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert c_law["params"]["gamma"] == pytest.approx(gamma, abs=0.005)
    assert c_law["params"]["E"] == pytest.approx(TRUE["E"], rel=0.01)


def test_frontier_keeps_runs_that_improve_on_all_cheaper_ones():
    points = [{"name": n, "C": c, "loss": y} for n, c, y in
              [("a", 1, 3.0), ("b", 2, 3.1), ("c", 2, 2.9), ("d", 4, 2.5), ("e", 8, 2.6), ("f", 9, 2.4)]]
    assert [p["name"] for p in frontier(points)] == ["a", "c", "d", "f"]


def test_a_slice_needs_three_distinct_values_at_one_level():
    # Three sizes in all, but never three at the same D: L(N) cannot hold D fixed.
    points = [{"name": f"r{i}", "N": n, "D": d, "C": 6 * n * d, "loss": 3.0 - 0.1 * i}
              for i, (n, d) in enumerate([(1e5, 1e6), (2e5, 1e6), (4e5, 2e6), (1e5, 2e6)])]
    with pytest.raises(UserError, match="law N: no D has runs at 3 or more distinct N"):
        select("N", points)
    # A one-axis sweep keeps every run, so the plainest reason is the one reported.
    single = [{**p, "D": 1e6} for p in points[:2]]
    chosen, rule = select("N", single)
    assert chosen == single and rule == "every run"
