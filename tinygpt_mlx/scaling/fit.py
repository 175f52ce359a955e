"""Scaling-law fitting (pure numpy/scipy): L(N), L(D), L(C) and the joint L(N, D) with bootstrap intervals.

Every law is a sum of an irreducible loss E and one power-law term per variable:
    L(x_1..x_k) = E + sum_k A_k * x_k^(-alpha_k)
fitted as in Hoffmann et al. (2022), approach 3: parametrise E = exp(e), A_k = exp(a_k) so that
log L = logsumexp(e, a_k - alpha_k log x_k), minimise the Huber loss (delta = 1e-3) between predicted and
observed log losses with L-BFGS-B, started from the best points of a grid, and keep the best optimum.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from tinygpt_mlx.errors import UserError

HUBER_DELTA = 1e-3


@dataclass(frozen=True)
class Law:
    """A law's name, variables and the names of its (coefficient, exponent) pair per variable."""

    key: str
    variables: tuple[str, ...]
    terms: tuple[tuple[str, str], ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("E",) + tuple(name for pair in self.terms for name in pair)

    @property
    def formula(self) -> str:
        parts = " + ".join(f"{c} * {v}^-{x}" for v, (c, x) in zip(self.variables, self.terms, strict=True))
        return f"L({', '.join(self.variables)}) = E + {parts}"


LAWS: dict[str, Law] = {
    "N": Law("N", ("N",), (("A", "alpha"),)),
    "D": Law("D", ("D",), (("B", "beta"),)),
    "C": Law("C", ("C",), (("K", "gamma"),)),
    "ND": Law("ND", ("N", "D"), (("A", "alpha"), ("B", "beta"))),
}

# Starting grid in the normalised parametrisation (x divided by its geometric mean, see _Problem):
# e = log E, a = log of the reducible loss at the typical x, and the exponent.
GRID_E = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A = (-3.0, -2.0, -1.0, 0.0, 1.0)
GRID_EXP = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
EXP_BOUNDS = (0.0, 10.0)


@dataclass
class LawFit:
    """A fitted law: point estimates, bootstrap intervals and goodness of fit."""

    law: Law
    params: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    r2_log: float
    objective: float
    n_points: int
    x: np.ndarray  # [n_points, n_variables]
    loss: np.ndarray
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # bootstrap params, natural scale
    n_bootstrap: int = 0
    seed: int | None = None

    def predict(self, x: np.ndarray, params: dict[str, float] | None = None) -> np.ndarray:
        """Loss the law predicts at x ([n] or [n, n_variables])."""
        return predict(self.law, params or self.params, x)


def predict(law: Law, params: dict[str, float], x: np.ndarray) -> np.ndarray:
    """E + sum_k A_k x_k^-alpha_k for x of shape [n] (one variable) or [n, k]."""
    x = np.asarray(x, dtype=float).reshape(len(np.atleast_1d(x)), -1)
    out = np.full(len(x), params["E"])
    for k, (coef, expo) in enumerate(law.terms):
        out = out + params[coef] * x[:, k] ** -params[expo]
    return out


def check_points(law: Law, x: np.ndarray, loss: np.ndarray) -> None:
    """Refuse data that cannot determine the law's parameters (raises UserError)."""
    n_params = len(law.param_names)
    if len(loss) < n_params:
        raise UserError(f"law {law.key} has {n_params} parameters but only {len(loss)} runs were given; "
                        f"it needs at least {n_params} runs")
    if not np.all(np.isfinite(loss)) or np.any(loss <= 0):
        raise UserError(f"law {law.key}: every loss must be a positive finite number, got {_bad(loss)}")
    for k, name in enumerate(law.variables):
        col = x[:, k]
        if not np.all(np.isfinite(col)) or np.any(col <= 0):
            raise UserError(f"law {law.key}: every {name} must be a positive finite number, got {_bad(col)}")
        if len(np.unique(col)) < 2:
            raise UserError(f"law {law.key}: all runs share a single {name} = {col[0]:g}; "
                            f"a power law in {name} needs at least two distinct values")


def _bad(values: np.ndarray) -> str:
    bad = [v for v in values.tolist() if not (math.isfinite(v) and v > 0)]
    return ", ".join(f"{v:g}" for v in bad[:3])


class _Problem:
    """The Huber objective for one data set, in normalised coordinates, with its analytic gradient."""

    def __init__(self, x: np.ndarray, loss: np.ndarray):
        # Dividing x by its geometric mean keeps a_k near log(reducible loss) instead of alpha * log(1e7),
        # which lets one small starting grid serve every law and scale of x.
        self.log_scale = np.log(x).mean(axis=0)
        self.log_x = np.log(x) - self.log_scale  # [n, k]
        self.log_loss = np.log(loss)

    def _terms(self, theta: np.ndarray) -> np.ndarray:
        """Log of each summand, shape [..., 1 + k, n] for theta of shape [..., 1 + 2k]."""
        e = theta[..., :1, None] * np.ones_like(self.log_loss)
        a, alpha = theta[..., 1::2, None], theta[..., 2::2, None]
        return np.concatenate([e, a - alpha * self.log_x.T], axis=-2)

    def values(self, thetas: np.ndarray) -> np.ndarray:
        """Objective at many thetas at once (for the starting grid)."""
        r = _logsumexp(self._terms(thetas), axis=-2) - self.log_loss
        return _huber(r).sum(axis=-1)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        terms = self._terms(theta)
        pred = _logsumexp(terms, axis=0)
        r = pred - self.log_loss
        weights = np.exp(terms - pred)  # d pred / d (each log summand): a softmax over the summands
        psi = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
        grad = np.empty_like(theta)
        grad[0] = psi @ weights[0]
        grad[1::2] = weights[1:] @ psi
        grad[2::2] = -(weights[1:] * self.log_x.T) @ psi
        return float(_huber(r).sum()), grad

    def natural(self, theta: np.ndarray, law: Law) -> dict[str, float]:
        """Normalised theta -> {E, A, alpha, ...} in the units of the data."""
        out = {"E": float(np.exp(theta[0]))}
        for k, (coef, expo) in enumerate(law.terms):
            a, alpha = theta[1 + 2 * k], theta[2 + 2 * k]
            out[coef] = float(np.exp(a + alpha * self.log_scale[k]))
            out[expo] = float(alpha)
        return out


def _logsumexp(terms: np.ndarray, axis: int) -> np.ndarray:
    # scipy.special.logsumexp costs ~0.3 ms a call in array-API checks; this runs thousands of times.
    top = terms.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.exp(terms - top).sum(axis=axis))


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run tiny L-BFGS problems on one BLAS thread."""
    # Waking OpenBLAS's thread pool for 3x3 algebra made each L-BFGS-B run 7-20x slower on a busy
    # 2-core machine; threadpoolctl scopes the limit (optional: without it we are only slower).
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _huber(r: np.ndarray) -> np.ndarray:
    # Divided by delta so gradients are O(1) for L-BFGS's tolerances; the minimiser is unchanged.
    a = np.abs(r)
    return np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA)) / HUBER_DELTA


def _grid(n_vars: int) -> np.ndarray:
    axes = [GRID_E] + [GRID_A, GRID_EXP] * n_vars
    return np.array(list(itertools.product(*axes)), dtype=float)


def _optimise(problem: _Problem, starts: np.ndarray) -> tuple[np.ndarray, float]:
    bounds = [(None, None)] + [(None, None), EXP_BOUNDS] * ((starts.shape[1] - 1) // 2)
    best_theta, best_value = starts[0], math.inf
    for start in starts:
        res = minimize(problem, start, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-9})
        if np.all(np.isfinite(res.x)) and res.fun < best_value:
            best_theta, best_value = res.x, float(res.fun)
    return best_theta, best_value


def _fit_theta(law: Law, problem: _Problem, n_starts: int, extra: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """L-BFGS-B from the n_starts best grid points (plus `extra` starts); the best optimum wins."""
    grid = _grid(len(law.variables))
    # Evaluating the whole grid is cheap and vectorised; running L-BFGS from every point is not, and the
    # best few grid points already reach the same optimum in our tests.
    order = np.argsort(problem.values(grid), kind="stable")[:n_starts]
    starts = grid[order] if extra is None else np.vstack([extra, grid[order]])
    return _optimise(problem, starts)


def r2_log(law: Law, params: dict[str, float], x: np.ndarray, loss: np.ndarray) -> float:
    """Coefficient of determination of log loss."""
    log_loss = np.log(loss)
    resid = log_loss - np.log(predict(law, params, x))
    total = ((log_loss - log_loss.mean()) ** 2).sum()
    return float(1.0 - (resid**2).sum() / total) if total > 0 else float("nan")


def fit_law(law_key: str, x: Any, loss: Any, n_bootstrap: int = 200, seed: int = 0,
            n_starts: int = 10) -> LawFit:
    """Fit one law to x ([n] or [n, k]) and losses, with percentile-bootstrap 95% intervals over runs."""
    if law_key not in LAWS:
        raise UserError(f"unknown law {law_key!r}; choose one of {', '.join(LAWS)}")
    law = LAWS[law_key]
    loss = np.asarray(loss, dtype=float).ravel()
    x = np.asarray(x, dtype=float).reshape(len(loss), -1)
    if x.shape[1] != len(law.variables):
        raise UserError(f"law {law.key} needs {len(law.variables)} variable(s), got {x.shape[1]}")
    check_points(law, x, loss)
    problem = _Problem(x, loss)
    with single_threaded_blas():
        theta, value = _fit_theta(law, problem, n_starts)
        params = problem.natural(theta, law)
        fit = LawFit(law, params, {}, r2_log(law, params, x, loss), value, len(loss), x, loss)
        if n_bootstrap > 0:
            fit.samples = bootstrap(law, x, loss, theta, problem.log_scale, n_bootstrap, seed)
            fit.n_bootstrap, fit.seed = n_bootstrap, seed
            fit.ci95 = {name: _percentiles(fit.samples[:, i]) for i, name in enumerate(law.param_names)}
    return fit


def bootstrap(law: Law, x: np.ndarray, loss: np.ndarray, theta: np.ndarray, log_scale: np.ndarray,
              n: int, seed: int) -> np.ndarray:
    """Refit on n resamples of the runs (seeded); returns natural-scale params, shape [n, n_params]."""
    rng = np.random.default_rng(seed)
    n_params = len(law.param_names)
    out = np.empty((n, n_params))
    for b in range(n):
        # Redraw resamples that cannot determine the law (too few distinct runs or a single x value).
        for _ in range(100):
            idx = rng.integers(0, len(loss), len(loss))
            if _identifiable(x[idx], n_params):
                break
        problem = _Problem(x[idx], loss[idx])
        # Start from the full-data optimum (shifted to this resample's normalisation) and the two best grid
        # points: a resample rarely moves the optimum to another basin, and each start costs an L-BFGS run.
        shifted = theta.copy()
        shifted[1::2] = theta[1::2] - theta[2::2] * (problem.log_scale - log_scale)
        best, _ = _fit_theta(law, problem, 2, extra=shifted[None])
        nat = problem.natural(best, law)
        out[b] = [nat[name] for name in law.param_names]
    return out


def _identifiable(x: np.ndarray, n_params: int) -> bool:
    distinct_rows = len(np.unique(x, axis=0))
    return distinct_rows >= n_params and all(len(np.unique(x[:, k])) >= 2 for k in range(x.shape[1]))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def compute_optimal(params: dict[str, float], compute: Any) -> dict[str, np.ndarray]:
    """N_opt(C), D_opt(C) of a joint L(N, D) fit under C = 6 N D (Hoffmann et al. 2022, eq. 4)."""
    alpha, beta, a_coef, b_coef = params["alpha"], params["beta"], params["A"], params["B"]
    c = np.asarray(compute, dtype=float)
    g = (alpha * a_coef / (beta * b_coef)) ** (1.0 / (alpha + beta))
    a_exp, b_exp = beta / (alpha + beta), alpha / (alpha + beta)
    return {"G": np.float64(g), "a": np.float64(a_exp), "b": np.float64(b_exp),
            "N_opt": g * (c / 6.0) ** a_exp, "D_opt": (c / 6.0) ** b_exp / g}
