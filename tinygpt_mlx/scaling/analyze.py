"""From sweep results to laws: pick the finished runs, fit each law, write fits.json / fits.yaml and plots."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.fit import LAWS, LawFit, compute_optimal, fit_law

X_COLUMNS = ("non_embedding_params", "params")
X_LABELS = {"non_embedding_params": "non-embedding parameters N", "params": "parameters N (with embeddings)"}
LOSS_COLUMNS = ("final_val_loss", "best_val_loss", "final_val_bpb", "best_val_bpb")
LAW_CHOICES = (*LAWS, "all")


def _positive(value: Any) -> float | None:
    """value as a finite positive number, or None (an empty, garbled or non-positive cell)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def points(rows: list[dict[str, Any]], x: str, loss: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Finished runs as {name, N, D, C, loss} (C = 6 N D with the chosen N), and the runs left out."""
    used, left_out = [], []
    for row in rows:
        n, d, y = (_positive(row.get(key)) for key in (x, "tokens_seen", loss))
        if row.get("status") not in (None, "done") or n is None or d is None or y is None:
            left_out.append({"name": row.get("name"), "status": row.get("status")})
            continue
        used.append({"name": row.get("name"), "N": n, "D": d, "C": 6.0 * n * d, "loss": y})
    return used, left_out


def law_report(fit: LawFit, columns: dict[str, str]) -> dict[str, Any]:
    """A fitted law as plain data: formula, parameters with intervals, R², and the points it used."""
    report: dict[str, Any] = {
        "formula": fit.law.formula,
        "variables": {v: columns[v] for v in fit.law.variables},
        "n_points": fit.n_points,
        "params": fit.params,
        "ci95": {k: list(v) for k, v in fit.ci95.items()},
        "r2_log": fit.r2_log,
        "huber_objective": fit.objective,
    }
    if fit.law.key == "ND":
        report["compute_optimal"] = optimum_report(fit)
    return report


def optimum_report(fit: LawFit) -> dict[str, Any]:
    """N_opt(C), D_opt(C) of the joint fit at decades of compute spanning the runs and 100x beyond."""
    compute = 6.0 * fit.x[:, 0] * fit.x[:, 1]
    decades = 10.0 ** np.arange(math.floor(math.log10(compute.min())), math.ceil(math.log10(compute.max())) + 3)
    best = compute_optimal(fit.params, decades)
    report: dict[str, Any] = {"note": "C = 6 N D; N_opt = G (C/6)^a, D_opt = (C/6)^b / G",
                              "G": float(best["G"]), "a": float(best["a"]), "b": float(best["b"])}
    boot = [compute_optimal(dict(zip(fit.law.param_names, s, strict=True)), decades) for s in fit.samples]
    if boot:
        for key in ("a", "b"):
            report[f"{key}_ci95"] = np.percentile([float(b[key]) for b in boot], [2.5, 97.5]).tolist()
    table = []
    for i, c in enumerate(decades):
        entry = {"compute_flops": float(c), "N_opt": float(best["N_opt"][i]), "D_opt": float(best["D_opt"][i])}
        for key in ("N_opt", "D_opt") if boot else ():
            entry[f"{key}_ci95"] = np.percentile([b[key][i] for b in boot], [2.5, 97.5]).tolist()
        table.append(entry)
    report["table"] = table
    return report


def fit_results(rows: list[dict[str, Any]], output_dir: str | Path, law: str = "all",
                x: str = "non_embedding_params", loss: str = "final_val_loss", n_bootstrap: int = 200,
                seed: int = 0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the chosen law(s) to summary rows; writes fits.json, fits.yaml and fit_<law>.png/.svg."""
    if law not in LAW_CHOICES:
        raise UserError(f"--law {law!r} is not one of {', '.join(LAW_CHOICES)}")
    if x not in X_COLUMNS:
        raise UserError(f"--x {x!r} is not one of {', '.join(X_COLUMNS)}")
    if loss not in LOSS_COLUMNS:
        raise UserError(f"--loss {loss!r} is not one of {', '.join(LOSS_COLUMNS)}")
    used, left_out = points(rows, x, loss)
    if not used:
        raise UserError(f"no finished runs to fit ({len(rows)} found, none with status done and a {loss})")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tinygpt_mlx.scaling.plots import plot_law  # matplotlib only once there is something to plot

    columns = {"N": x, "D": "tokens_seen", "C": "6 * N * tokens_seen"}
    ylabel = "validation " + ("bits per byte" if "bpb" in loss else "loss (nats/token)")
    report: dict[str, Any] = {"x": x, "loss": loss, "bootstrap": {"n": n_bootstrap, "seed": seed},
                              "runs": used, "left_out": left_out, "laws": {}}
    for key in LAWS if law == "all" else (law,):
        xs = np.array([[p[v] for v in LAWS[key].variables] for p in used])
        try:
            fit = fit_law(key, xs, [p["loss"] for p in used], n_bootstrap=n_bootstrap, seed=seed)
        except UserError as err:
            if law != "all":
                raise
            report["laws"][key] = {"skipped": str(err)}
            say(f"law {key} skipped, no plot: {err}")
            continue
        entry = law_report(fit, columns)
        xlabel = X_LABELS[x] if "N" in fit.law.variables else None
        entry["plots"] = [p.name for p in plot_law(fit, out, xlabel=xlabel, ylabel=ylabel)]
        report["laws"][key] = entry
        say(summary_line(key, entry))
    skipped = [key for key, entry in report["laws"].items() if "skipped" in entry]
    if len(skipped) == len(report["laws"]):
        raise UserError(f"no law can be fit to {len(used)} finished run(s) (skipped {', '.join(skipped)}): "
                        f"{report['laws'][skipped[0]]['skipped']}")
    (out / "fits.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "fits.yaml").write_text(yaml.safe_dump(report, sort_keys=False))
    return report


def summary_line(key: str, entry: dict[str, Any]) -> str:
    """One line per law for the console: exponents with intervals, E and R²."""
    parts = []
    for name, value in entry["params"].items():
        ci = entry["ci95"].get(name)
        parts.append(f"{name} = {value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
    return f"L({key}): {'; '.join(parts)}; R2(log) = {entry['r2_log']:.4f} ({entry['n_points']} runs)"
