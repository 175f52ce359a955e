"""From sweep results to laws: pick the finished runs, fit each law to the runs it describes, check the fits
(residuals, leave-one-out, bounds, held-out runs) and write fits.json / fits.yaml / fits.md and plots."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.diagnostics import leave_one_out, predict_runs, residuals
from tinygpt_mlx.scaling.fit import LAWS, LawFit, compute_optimal, fit_law
from tinygpt_mlx.scaling.selection import select
from tinygpt_mlx.scaling.tables import markdown

X_COLUMNS = ("non_embedding_params", "params")
X_LABELS = {"non_embedding_params": "non-embedding parameters N", "params": "parameters N (with embeddings)"}
LOSS_COLUMNS = ("final_val_loss", "best_val_loss", "final_val_bpb", "best_val_bpb")
LAW_CHOICES = (*LAWS, "all")
HOLDOUT_LAW = "ND"


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


def held_out(used: list[dict[str, Any]], names: list[str], largest: int) -> list[str]:
    """Names of the runs to hold out: those named, plus the `largest` runs of most compute."""
    known = {str(p["name"]) for p in used}  # a CSV name like "7" reads back as a number
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"--holdout {', '.join(unknown)}: no finished run has that name "
                        f"(runs: {', '.join(sorted(map(str, known)))})")
    by_compute = sorted(used, key=lambda p: p["C"], reverse=True)
    chosen = list(dict.fromkeys([*names, *(str(p["name"]) for p in by_compute[:largest])]))
    if len(chosen) >= len(known):
        raise UserError(f"--holdout leaves no run to fit: all {len(known)} finished runs are held out")
    return chosen


def law_report(fit: LawFit, columns: dict[str, str]) -> dict[str, Any]:
    """A fitted law as plain data: formula, parameters with intervals, R², bounds and notes."""
    report: dict[str, Any] = {
        "formula": fit.law.formula,
        "variables": {v: columns[v] for v in fit.law.variables},
        "n_points": fit.n_points,
        "params": fit.params,
        "ci95": {k: list(v) for k, v in fit.ci95.items()},
        "r2_log": fit.r2_log,
        "huber_objective": fit.objective,
        "at_bound": fit.at_bound,
        "notes": fit.notes,
        "bootstrap": {"used": fit.n_bootstrap, "redrawn": fit.redrawn, "dropped": fit.dropped,
                      "at_bound": fit.bootstrap_at_bound},
    }
    if fit.law.key == "ND":
        report["compute_optimal"] = optimum_report(fit)
    return report


def optimum_report(fit: LawFit) -> dict[str, Any]:
    """N_opt(C), D_opt(C) of the joint fit at the runs' least and most compute and at decades up to 100x beyond."""
    compute = 6.0 * fit.x[:, 0] * fit.x[:, 1]
    decades = 10.0 ** np.arange(math.floor(math.log10(compute.min())), math.ceil(math.log10(compute.max())) + 3)
    best = compute_optimal(fit.params, decades)
    report: dict[str, Any] = {"note": "C = 6 N D; N_opt = G (C/6)^a, D_opt = (C/6)^b / G",
                              "G": float(best["G"]), "a": float(best["a"]), "b": float(best["b"])}
    boot = [dict(zip(fit.law.param_names, s, strict=True)) for s in fit.samples]
    if boot:
        for key in ("a", "b"):
            report[f"{key}_ci95"] = np.percentile([float(compute_optimal(b, 1.0)[key]) for b in boot],
                                                  [2.5, 97.5]).tolist()
    report["at_run_compute"] = _allocations(fit.params, boot, [float(compute.min()), float(compute.max())])
    report["table"] = _allocations(fit.params, boot, decades.tolist())
    return report


def _allocations(params: dict[str, float], boot: list[dict[str, float]], compute: list[float]) -> list[dict]:
    """N_opt, D_opt and D_opt / N_opt at each compute, with bootstrap 95% intervals when there are samples."""
    best = compute_optimal(params, compute)
    samples = [compute_optimal(b, compute) for b in boot]
    rows = []
    for i, c in enumerate(compute):
        row = {"compute_flops": c, "N_opt": float(best["N_opt"][i]), "D_opt": float(best["D_opt"][i]),
               "tokens_per_param": float(best["D_opt"][i] / best["N_opt"][i])}
        if samples:
            for key in ("N_opt", "D_opt"):
                row[f"{key}_ci95"] = np.percentile([s[key][i] for s in samples], [2.5, 97.5]).tolist()
            ratios = [s["D_opt"][i] / s["N_opt"][i] for s in samples]
            row["tokens_per_param_ci95"] = np.percentile(ratios, [2.5, 97.5]).tolist()
        rows.append(row)
    return rows


def fit_results(rows: list[dict[str, Any]], output_dir: str | Path, law: str = "all",
                x: str = "non_embedding_params", loss: str = "final_val_loss", n_bootstrap: int = 200,
                seed: int = 0, holdout: list[str] | None = None, holdout_largest: int = 0,
                say: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the chosen law(s) to summary rows; writes fits.json, fits.yaml, fits.md and per-law plots.

    Runs named in `holdout` (and the `holdout_largest` runs of most compute) are left out of every fit; the
    joint law fitted to the rest predicts their loss, with intervals, next to what they measured.
    """
    if law not in LAW_CHOICES:
        raise UserError(f"--law {law!r} is not one of {', '.join(LAW_CHOICES)}")
    if x not in X_COLUMNS:
        raise UserError(f"--x {x!r} is not one of {', '.join(X_COLUMNS)}")
    if loss not in LOSS_COLUMNS:
        raise UserError(f"--loss {loss!r} is not one of {', '.join(LOSS_COLUMNS)}")
    if holdout_largest < 0:
        raise UserError(f"--holdout-largest must be 0 or more, got {holdout_largest}")
    holding = bool(holdout) or holdout_largest > 0
    if holding and law not in (HOLDOUT_LAW, "all"):
        raise UserError(f"--holdout predicts with the joint law L(N, D): use --law {HOLDOUT_LAW} or all")
    used, left_out = points(rows, x, loss)
    if not used:
        raise UserError(f"no finished runs to fit ({len(rows)} found, none with status done and a {loss})")
    held = held_out(used, holdout or [], holdout_largest) if holding else []
    fitted_runs = [p for p in used if str(p["name"]) not in held]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tinygpt_mlx.scaling.plots import plot_law, plot_residuals  # matplotlib only once there is a fit

    columns = {"N": x, "D": "tokens_seen", "C": "6 * N * tokens_seen"}
    ylabel = "validation " + ("bits per byte" if "bpb" in loss else "loss (nats/token)")
    report: dict[str, Any] = {"x": x, "loss": loss, "bootstrap": {"n": n_bootstrap, "seed": seed},
                              "runs": used, "left_out": left_out, "laws": {}}
    fits: dict[str, LawFit] = {}
    for key in LAWS if law == "all" else (law,):
        try:
            fit, entry = _fit_and_check(key, fitted_runs, columns, n_bootstrap, seed)
        except UserError as err:
            if law != "all":
                raise
            report["laws"][key] = {"skipped": str(err)}
            say(f"law {key} skipped, no plot: {err}")
            continue
        fits[key] = fit
        xlabel = X_LABELS[x] if "N" in fit.law.variables else None
        entry["plots"] = [p.name for p in plot_law(fit, out, xlabel=xlabel, ylabel=ylabel)]
        report["laws"][key] = entry
        for line in console_lines(key, entry):
            say(line)
    skipped = [key for key, entry in report["laws"].items() if "skipped" in entry]
    if len(skipped) == len(report["laws"]):
        raise UserError(f"no law can be fit to {len(used)} finished run(s) (skipped {', '.join(skipped)}): "
                        f"{report['laws'][skipped[0]]['skipped']}")
    if held:
        if HOLDOUT_LAW not in fits:
            raise UserError(f"--holdout needs the joint law L(N, D), which the remaining {len(fitted_runs)} runs "
                            f"cannot determine: {report['laws'][HOLDOUT_LAW]['skipped']}")
        report["holdout"] = holdout_report(fits[HOLDOUT_LAW], [p for p in used if str(p["name"]) in held], seed)
    for key in fits:
        predicted = report.get("holdout", {}).get("predictions", []) if key == HOLDOUT_LAW else []
        plots = plot_residuals(report["laws"][key]["residuals"], predicted, out, f"residuals_{key}",
                               title=f"L({key}) residuals per run")
        report["laws"][key]["plots"] += [p.name for p in plots]
    (out / "fits.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "fits.yaml").write_text(yaml.safe_dump(report, sort_keys=False))
    (out / "fits.md").write_text(markdown(report))
    return report


def _fit_and_check(key: str, runs: list[dict[str, Any]], columns: dict[str, str], n_bootstrap: int,
                   seed: int) -> tuple[LawFit, dict[str, Any]]:
    """Fit one law to the runs it describes, with its residuals and leave-one-out refits."""
    chosen, rule = select(key, runs)
    fit = fit_law(key, [[p[v] for v in LAWS[key].variables] for p in chosen], [p["loss"] for p in chosen],
                  n_bootstrap=n_bootstrap, seed=seed)
    names = [p["name"] for p in chosen]
    entry = law_report(fit, columns)
    entry["selection"] = {"rule": rule, "runs": names}
    entry["residuals"] = residuals(fit, names)
    entry["leave_one_out"] = leave_one_out(fit, names)
    return fit, entry


def holdout_report(fit: LawFit, held: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The joint law's predictions for the held-out runs next to what they measured."""
    x = np.array([[p["N"], p["D"]] for p in held])
    rows = predict_runs(fit, x, np.array([p["loss"] for p in held]), seed=seed)
    for row, p in zip(rows, held, strict=True):
        row.update({"name": p["name"], "C": p["C"]})
    return {"law": HOLDOUT_LAW, "runs": [p["name"] for p in held],
            "max_abs_error_pct": max(abs(r["error_pct"]) for r in rows), "predictions": rows}


def summary_line(key: str, entry: dict[str, Any]) -> str:
    """One line per law for the console: exponents with intervals, E and R²."""
    parts = []
    for name, value in entry["params"].items():
        ci = entry["ci95"].get(name)
        bound = " (at bound)" if name in entry.get("at_bound", ()) else ""
        parts.append(f"{name} = {value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "") + bound)
    return f"L({key}): {'; '.join(parts)}; R2(log) = {entry['r2_log']:.4f} ({entry['n_points']} runs)"


def console_lines(key: str, entry: dict[str, Any]) -> list[str]:
    """The summary line, the runs it used, its notes and its leave-one-out ranges."""
    lines = [summary_line(key, entry), f"  fitted to {entry['selection']['rule']}"]
    lines += [f"  note: {note}" for note in entry["notes"]]
    loo = entry["leave_one_out"]
    shown = ["E", *(expo for _, expo in LAWS[key].terms)]
    spans = [f"{name} {lo:.4g}..{hi:.4g} (most: {loo['most_influential'][name]['name']})"
             for name, (lo, hi) in loo["range"].items() if name in shown]
    if spans:
        lines.append(f"  leave-one-out: {'; '.join(spans)}")
    if loo["essential"]:
        lines.append(f"  leave-one-out: without {', '.join(e['name'] for e in loo['essential'])} the law is "
                     "not determined")
    return lines
