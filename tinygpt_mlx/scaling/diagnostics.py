"""What a reviewer asks of a fitted law: residuals per run, leave-one-out sensitivity, predictions with intervals.

Pure numpy on a LawFit from fit.py; no plotting (plots.py) and no files (analyze.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.fit import LawFit, fit_law


def residuals(fit: LawFit, names: list[str]) -> list[dict[str, Any]]:
    """Per run: measured and fitted loss, and the residual measured / fitted - 1 in percent."""
    fitted = fit.predict(fit.x)
    rows = []
    for i, name in enumerate(names):
        row: dict[str, Any] = {"name": name}
        row.update({v: float(fit.x[i, k]) for k, v in enumerate(fit.law.variables)})
        row.update({"measured": float(fit.loss[i]), "fitted": float(fitted[i]),
                    "residual_pct": float(100.0 * (fit.loss[i] / fitted[i] - 1.0))})
        rows.append(row)
    return rows


def leave_one_out(fit: LawFit, names: list[str], n_starts: int = 10) -> dict[str, Any]:
    """Refit without each run in turn: every parameter's range over those fits and the run that moves it most."""
    refits, refused = [], []
    for i, name in enumerate(names):
        keep = np.arange(fit.n_points) != i
        try:
            params = fit_law(fit.law.key, fit.x[keep], fit.loss[keep], n_bootstrap=0, n_starts=n_starts).params
        except UserError as err:
            # Without this run the law is no longer determined: it is essential, which is worth saying.
            refused.append({"name": name, "reason": str(err)})
            continue
        refits.append({"name": name, "params": params})
    report: dict[str, Any] = {"refits": refits, "essential": refused, "range": {}, "most_influential": {}}
    for param in fit.law.param_names:
        if not refits:
            break
        values = [r["params"][param] for r in refits]
        shift = np.array(values) - fit.params[param]
        worst = int(np.argmax(np.abs(shift)))
        report["range"][param] = [float(min(values)), float(max(values))]
        report["most_influential"][param] = {"name": refits[worst]["name"], "shift": float(shift[worst])}
    return report


def predict_runs(fit: LawFit, x: np.ndarray, measured: np.ndarray, seed: int = 0) -> list[dict[str, Any]]:
    """Predicted loss at x ([n, k]) with the law's 95% interval and a 95% interval for one new run, vs measured.

    The law's interval (ci95) is the spread of the bootstrap fits' predictions. A measured run also carries
    the run-to-run scatter the law leaves in its residuals, so pi95 adds a resampled log residual of the fit
    (inflated by sqrt(n / (n - p)), the usual correction for residuals shrunk by fitting) to each replicate.
    """
    x = np.asarray(x, dtype=float).reshape(len(measured), -1)
    point = fit.predict(x)
    rows = []
    ci = pi = None
    if len(fit.samples):
        names = fit.law.param_names
        boot = np.array([fit.predict(x, dict(zip(names, s, strict=True))) for s in fit.samples])  # [b, n]
        resid = np.log(fit.loss) - np.log(fit.predict(fit.x))
        dof = max(1, fit.n_points - len(names))
        resid = resid * np.sqrt(fit.n_points / dof)
        rng = np.random.default_rng(seed)
        noisy = boot * np.exp(rng.choice(resid, size=boot.shape))
        ci = np.percentile(boot, [2.5, 97.5], axis=0)
        pi = np.percentile(noisy, [2.5, 97.5], axis=0)
    for i in range(len(measured)):
        row: dict[str, Any] = {v: float(x[i, k]) for k, v in enumerate(fit.law.variables)}
        row.update({"measured": float(measured[i]), "predicted": float(point[i]),
                    "error_pct": float(100.0 * (point[i] / measured[i] - 1.0))})
        if ci is not None and pi is not None:
            row["ci95"] = [float(ci[0, i]), float(ci[1, i])]
            row["pi95"] = [float(pi[0, i]), float(pi[1, i])]
            row["inside_pi95"] = bool(pi[0, i] <= measured[i] <= pi[1, i])
        rows.append(row)
    return rows
