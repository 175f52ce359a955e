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
MIN_VALUES = 3  # distinct values per variable: E, a coefficient and an exponent need three levels to separate
MAX_REDRAWS = 100  # resamples tried per bootstrap replicate before the replicate is dropped
# A parameter "at a bound": an exponent within BOUND_TOL of EXP_BOUNDS, or a term (E, or a coefficient's
# A x^-alpha at every run) below NEGLIGIBLE of the smallest loss. L-BFGS-B lands exactly on an active bound.
BOUND_TOL = 1e-3
NEGLIGIBLE = 1e-3


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
    n_bootstrap: int = 0  # replicates behind the intervals (requested minus dropped)
    seed: int | None = None
    redrawn: int = 0  # resamples that could not determine the law and were drawn again
    dropped: int = 0  # replicates with no usable resample in MAX_REDRAWS draws: left out, never used
    at_bound: list[str] = field(default_factory=list)  # parameters of the point estimate at a bound
    bootstrap_at_bound: dict[str, float] = field(default_factory=dict)  # share of replicates, where > 0
    notes: list[str] = field(default_factory=list)  # what a reader must know before trusting the numbers

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
    problem = undetermined(law, x)
    if problem:
        raise UserError(f"law {law.key}: {problem}")


def undetermined(law: Law, x: np.ndarray) -> str | None:
    """Why runs at these x cannot determine the law (counting distinct points, not runs), or None."""
    n_params = len(law.param_names)
    for k, name in enumerate(law.variables):
        values = np.unique(x[:, k])
        if len(values) == 1:
            return (f"all runs share a single {name} = {values[0]:g}; "
                    f"a power law in {name} needs at least two distinct values")
        if len(values) < MIN_VALUES:
            return (f"the runs have only {len(values)} distinct values of {name} "
                    f"({', '.join(f'{v:g}' for v in values)}); E, a coefficient and an exponent need at "
                    f"least {MIN_VALUES}")
    distinct = len(np.unique(x, axis=0))
    if distinct < n_params:
        return (f"{n_params} parameters but the runs give only {distinct} distinct "
                f"({', '.join(law.variables)}) points; it needs at least {n_params}")
    if x.shape[1] > 1:
        # log D an affine function of log N (e.g. D = 20 N in every run): the two terms trade off freely.
        centred = np.log(x) - np.log(x).mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[-1] <= 1e-6 * sv[0]:
            return (f"{' and '.join(law.variables)} vary together (one is a fixed power of the other in "
                    f"every run), so their terms cannot be told apart; add runs that vary them independently")
    return None


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
        fit.at_bound = at_bounds(law, params, x, loss)
        fit.notes += [bound_note(law, name, params) for name in fit.at_bound]
        if n_bootstrap > 0:
            _add_intervals(fit, theta, problem.log_scale, n_bootstrap, seed)
    return fit


def _add_intervals(fit: LawFit, theta: np.ndarray, log_scale: np.ndarray, n_bootstrap: int, seed: int) -> None:
    law, n_params = fit.law, len(fit.law.param_names)
    fit.seed = seed
    distinct = len(np.unique(fit.x, axis=0))
    if distinct <= n_params:
        # Every resample that still determines the law holds every distinct point: it refits the same
        # curve, and a zero-width interval would claim a certainty the runs do not have.
        fit.notes.append(f"no intervals: {distinct} distinct points for {n_params} parameters fit exactly; "
                         "add runs at new points")
        return
    fit.samples, fit.redrawn, fit.dropped = bootstrap(law, fit.x, fit.loss, theta, log_scale, n_bootstrap, seed)
    fit.n_bootstrap = len(fit.samples)
    if fit.dropped:
        fit.notes.append(f"bootstrap: {fit.dropped} of {n_bootstrap} replicates found no resample that "
                         f"determines the law in {MAX_REDRAWS} draws and were left out")
    if fit.n_bootstrap < 2:
        fit.notes.append("no intervals: fewer than two usable bootstrap replicates")
        return
    fit.ci95 = {name: _percentiles(fit.samples[:, i]) for i, name in enumerate(law.param_names)}
    shares = np.mean([at_bounds_mask(law, dict(zip(law.param_names, s, strict=True)), fit.x, fit.loss)
                      for s in fit.samples], axis=0)
    fit.bootstrap_at_bound = {name: float(share) for name, share in zip(law.param_names, shares, strict=True)
                              if share > 0}
    for name, share in fit.bootstrap_at_bound.items():
        if share > 0.025 and name not in fit.at_bound:  # enough to move a 2.5% percentile onto the bound
            fit.notes.append(f"{name}: {share:.0%} of bootstrap fits sit at a bound, so its interval "
                             "reaches that bound")


def at_bounds_mask(law: Law, params: dict[str, float], x: np.ndarray, loss: np.ndarray) -> list[bool]:
    """For each parameter (law.param_names order): is it at a bound of the fit?"""
    floor = NEGLIGIBLE * float(np.min(loss))
    flags = {"E": params["E"] < floor}
    for k, (coef, expo) in enumerate(law.terms):
        flags[expo] = not (EXP_BOUNDS[0] + BOUND_TOL < params[expo] < EXP_BOUNDS[1] - BOUND_TOL)
        flags[coef] = bool(np.all(params[coef] * x[:, k] ** -params[expo] < floor))
    return [flags[name] for name in law.param_names]


def at_bounds(law: Law, params: dict[str, float], x: np.ndarray, loss: np.ndarray) -> list[str]:
    """Names of the parameters at a bound: an exponent at 0 or 10, E or a whole term at (nearly) zero."""
    mask = at_bounds_mask(law, params, x, loss)
    return [name for name, flag in zip(law.param_names, mask, strict=True) if flag]


def bound_note(law: Law, name: str, params: dict[str, float]) -> str:
    """Why a parameter at a bound makes the fit untrustworthy, in one sentence."""
    value = f"{name} = {params[name]:.3g}"
    if name == "E":
        return (f"{value} sits at its lower bound 0: these runs cannot separate the irreducible loss from "
                "the power-law terms")
    for var, (coef, expo) in zip(law.variables, law.terms, strict=True):
        if name == expo and params[expo] <= EXP_BOUNDS[0] + BOUND_TOL:
            return (f"{value} sits at its lower bound {EXP_BOUNDS[0]:g}: the loss does not fall with {var} "
                    f"in these runs, so {coef} and E are not determined")
        if name == expo:
            return (f"{value} sits at its upper bound {EXP_BOUNDS[1]:g}: the {var} term is a step, not a "
                    f"power law ({coef} = {params[coef]:.3g}); the fit is not determined")
        if name == coef:
            return (f"{value}: its term {coef} * {var}^-{expo} is below {NEGLIGIBLE:.1%} of the loss at every "
                    f"run, so {var} has no measurable effect in this fit")
    raise KeyError(name)


def bootstrap(law: Law, x: np.ndarray, loss: np.ndarray, theta: np.ndarray, log_scale: np.ndarray,
              n: int, seed: int) -> tuple[np.ndarray, int, int]:
    """Refit on n seeded resamples of the runs -> (params [used, n_params] natural scale, redrawn, dropped)."""
    rng = np.random.default_rng(seed)
    rows, redrawn, dropped = [], 0, 0
    for _ in range(n):
        # A resample that cannot determine the law (too few distinct points) is drawn again; a replicate
        # that never finds one is dropped rather than fitted to data that cannot pin it.
        for _ in range(MAX_REDRAWS):
            idx = rng.integers(0, len(loss), len(loss))
            if undetermined(law, x[idx]) is None:
                break
            redrawn += 1
        else:
            dropped += 1
            continue
        problem = _Problem(x[idx], loss[idx])
        # Start from the full-data optimum (shifted to this resample's normalisation) and the two best grid
        # points: a resample rarely moves the optimum to another basin, and each start costs an L-BFGS run.
        shifted = theta.copy()
        shifted[1::2] = theta[1::2] - theta[2::2] * (problem.log_scale - log_scale)
        best, _ = _fit_theta(law, problem, 2, extra=shifted[None])
        nat = problem.natural(best, law)
        rows.append([nat[name] for name in law.param_names])
    return np.array(rows).reshape(len(rows), len(law.param_names)), redrawn, dropped


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
