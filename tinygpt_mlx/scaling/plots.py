"""Scaling-law plots as PNG + SVG: the runs, the fitted law and its bootstrap 95% band on log-log axes.

Figures come from tinygpt_mlx.plotting (no GUI backend, no timestamps). A law without data gets no plot,
only a note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import FormatStrFormatter

from tinygpt_mlx.plotting import new_figure, save_figure
from tinygpt_mlx.scaling.fit import LawFit

LABELS = {"N": "parameters N", "D": "training tokens D", "C": "compute C = 6ND (FLOPs)"}


def _band(fit: LawFit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """2.5 / 97.5 percentiles of the bootstrap fits' predictions at each x."""
    if len(fit.samples) == 0:
        return None
    names = fit.law.param_names
    preds = np.array([fit.predict(x, dict(zip(names, s, strict=True))) for s in fit.samples])
    return np.percentile(preds, 2.5, axis=0), np.percentile(preds, 97.5, axis=0)


def _title(fit: LawFit) -> str:
    parts = []
    for _, expo in fit.law.terms:
        value, ci = fit.params[expo], fit.ci95.get(expo)
        parts.append(f"{expo} = {value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    return f"{fit.law.formula}\n{', '.join(parts)}, E = {fit.params['E']:.3f}, R² (log) = {fit.r2_log:.3f}"


def plot_law(fit: LawFit, out_dir: str | Path, name: str | None = None, xlabel: str | None = None,
             ylabel: str = "validation loss (nats/token)") -> list[Path]:
    """Points, fitted curve and bootstrap band for one fitted law; [] when it has no points."""
    if fit.n_points == 0:
        return []
    fig, ax = new_figure(figsize=(6.4, 4.4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Losses span less than a decade: plain numbers read better than 2.4 x 10^0 on the log axis.
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
    var = fit.law.variables[0]
    ax.set_xlabel(xlabel or LABELS.get(var, var))
    ax.set_ylabel(ylabel)
    ax.set_title(_title(fit), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    # The joint law has a second variable (D): one curve per distinct D, coloured alike with its points.
    groups = np.unique(fit.x[:, 1]) if fit.x.shape[1] > 1 else [None]
    colours = [f"C{i % 10}" for i in range(len(groups))]
    lo, hi = fit.x[:, 0].min(), fit.x[:, 0].max()
    grid = np.geomspace(lo / 1.5, hi * 1.5, 200)
    for group, colour in zip(groups, colours, strict=True):
        mask = np.ones(fit.n_points, bool) if group is None else fit.x[:, 1] == group
        label = "runs" if group is None else f"D = {group:.3g}"
        ax.scatter(fit.x[mask, 0], fit.loss[mask], color=colour, zorder=3, label=label)
        xs = grid[:, None] if group is None else np.column_stack([grid, np.full_like(grid, group)])
        ax.plot(grid, fit.predict(xs), color=colour, lw=1.5, label="fit" if group is None else None)
        band = _band(fit, xs)
        if band is not None:
            ax.fill_between(grid, *band, color=colour, alpha=0.2, lw=0,
                            label="bootstrap 95%" if group is None else None)
    bottom = fit.loss.min()
    if fit.params["E"] > 0.2 * fit.loss.min():  # a near-zero E would only stretch the log axis
        ax.axhline(fit.params["E"], color="gray", ls=":", lw=1, label="E (irreducible)")
        bottom = min(bottom, fit.params["E"])
    # Frame the data: a wide band where the fit extrapolates must not squash the points into a line.
    ax.set_ylim(bottom / 1.1, fit.loss.max() * 1.25)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, name or f"fit_{fit.law.key}")


def plot_residuals(fitted: list[dict], held_out: list[dict], out_dir: str | Path, name: str,
                   title: str = "residuals per run") -> list[Path]:
    """Residual (measured / law - 1, in %) of every fitted run, and of each held-out run against its prediction."""
    rows = [(r["name"], r["residual_pct"]) for r in fitted]
    held = [(r["name"], 100.0 * (r["measured"] / r["predicted"] - 1.0)) for r in held_out]
    labels = [str(n) for n, _ in rows + held]
    fig, ax = new_figure(figsize=(max(6.4, 0.32 * len(labels) + 1.5), 4.4))
    ax.axhline(0.0, color="gray", lw=1)
    ax.scatter(range(len(rows)), [v for _, v in rows], color="C0", zorder=3, label="fitted runs")
    if held:
        ax.scatter(range(len(rows), len(labels)), [v for _, v in held], facecolors="none", edgecolors="C3",
                   zorder=3, label="held out (vs prediction)")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("measured / law - 1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, name)
