"""Run plots as PNG + SVG: loss against tokens seen, the learning rate, validation loss per checkpoint.

Figures come from tinygpt_mlx.plotting (no GUI backend, no timestamps). A plot without data is skipped
with a note instead of raising: a run that has not logged an eval yet still gets its other plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tinygpt_mlx.plotting import new_figure, save_figure


@dataclass
class PlotReport:
    """What make_plots wrote and what it skipped (one sentence per skipped plot)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig, ax = new_figure()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _points(records: Sequence[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(r[x], r[y]) for r in records if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_loss(train: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Train loss and val loss against tokens seen (metrics.jsonl records); [] when there is neither."""
    tx, ty = _points(train, "tokens_seen", "loss")
    vx, vy = _points(evals, "tokens_seen", "val_loss")
    if not tx and not vx:
        return []
    fig, ax = _axes("Loss", "tokens seen", "loss (nats/token)")
    if tx:
        ax.plot(tx, ty, label="train", linewidth=1.2)
    if vx:
        ax.plot(vx, vy, "o-", label="validation", linewidth=1.2, markersize=4)
    ax.legend()
    return save_figure(fig, out_dir, "loss")


def plot_lr(train: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Learning rate against step; [] without train records."""
    steps, lrs = _points(train, "step", "lr")
    if not steps:
        return []
    fig, ax = _axes("Learning-rate schedule", "step", "learning rate")
    ax.plot(steps, lrs, linewidth=1.2)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return save_figure(fig, out_dir, "lr")


def plot_checkpoints(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Validation loss of each evaluated checkpoint against tokens seen; [] without rows."""
    xs, ys = _points(rows, "tokens_seen", "val_loss")
    if not xs:
        return []
    fig, ax = _axes("Validation loss per checkpoint", "tokens seen", "val loss (nats/token)")
    ax.plot(xs, ys, "o-", linewidth=1.2, markersize=5)
    for row in rows:
        ax.annotate(str(row["step"]), (row["tokens_seen"], row["val_loss"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    return save_figure(fig, out_dir, "val_loss_per_checkpoint")


def make_plots(metrics: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]],
               out_dir: str | Path) -> PlotReport:
    """Every plot into out_dir (OUT/plots); plots without data are listed in `skipped`."""
    out_dir = Path(out_dir)
    train = [r for r in metrics if r.get("type") == "train"]
    evals = [r for r in metrics if r.get("type") == "eval"]
    report = PlotReport()
    for name, paths, why in (
        ("loss", plot_loss(train, evals, out_dir), "no train or eval records in metrics.jsonl"),
        ("lr", plot_lr(train, out_dir), "no train records in metrics.jsonl"),
        ("val_loss_per_checkpoint", plot_checkpoints(rows, out_dir), "no evaluated checkpoints"),
    ):
        if paths:
            report.written.extend(paths)
        else:
            report.skipped.append(f"{name} plot skipped: {why}")
    return report
