"""The two SEAL plots from adapt.jsonl's inner-loop grids: Δ loss against update budget, and against forgetting.

Both read the held-out records' (steps x rank) grids, averaged over contexts and samples per table row;
`seal analyze` writes them when the run folder has its adapt.jsonl (the committed summary has no grids).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinygpt_mlx.seal.summary import row_label


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def grid_means(records: list[dict[str, Any]]) -> dict[str, dict[tuple[int, int], tuple[float, float]]]:
    """Per held-out method, per (steps, rank): mean (Δ loss, forgetting) over contexts and samples."""
    acc: dict[str, dict[tuple[int, int], list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["type"] == "edit" and r["split"] == "heldout":
            for p in r.get("grid", []):
                acc[row_label(r)][(p["steps"], p["rank"])].append((p["delta_loss"], p["forgetting"]))
    return {m: {k: (_mean([d for d, _ in v]), _mean([f for _, f in v])) for k, v in pts.items()}
            for m, pts in acc.items()}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (forgetting, Δ loss) points no other point beats on both (less forgetting, more Δ), by forgetting."""
    front, best = [], -math.inf
    for f, d in sorted(points, key=lambda p: (p[0], -p[1])):
        if d > best:
            front.append((f, d))
            best = d
    return front


def plot_budget(means: dict, out_dir: Path) -> list[Path]:
    """Δ loss against update budget (inner steps x rank): a line per method and rank."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from tinygpt_mlx.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(6.5, 4.2))
    styles = ["-", "--", ":", "-."]
    for color, (method, pts) in enumerate(means.items()):
        ranks = sorted({rank for _, rank in pts})
        for i, rank in enumerate(ranks):
            steps = sorted(s for s, r in pts if r == rank)
            ax.plot([s * rank for s in steps], [pts[(s, rank)][0] for s in steps], styles[i % len(styles)],
                    marker="o", color=f"C{color}", label=f"{method}, rank {rank}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())  # 30, not 3 x 10^1
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("update budget: inner steps x LoRA rank")
    ax.set_ylabel("Δ no-context target loss (nats/token)")
    ax.set_title("Held-out knowledge incorporation vs update budget")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, "delta_vs_budget")


def plot_pareto(means: dict, out_dir: Path) -> list[Path]:
    """Δ loss against forgetting for every (method, steps, rank), with the Pareto front."""
    from tinygpt_mlx.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(6.5, 4.2))
    everything = [(0.0, 0.0)]
    ax.scatter([0.0], [0.0], color="black", marker="x", label="no adaptation")
    for color, (method, pts) in enumerate(means.items()):
        xs, ys = [f for _, f in pts.values()], [d for d, _ in pts.values()]
        ax.scatter(xs, ys, color=f"C{color}", label=method, s=18)
        everything += list(zip(xs, ys, strict=True))
    front = pareto_front(everything)
    # Hollow rings mark the front, so a front of one dominating point still shows.
    ax.plot([f for f, _ in front], [d for _, d in front], drawstyle="steps-post", color="grey", linewidth=1,
            marker="o", markersize=9, markerfacecolor="none", label="Pareto front")
    ax.set_xlabel("forgetting: Δ loss on general stories (nats/token, lower is better)")
    ax.set_ylabel("Δ no-context target loss (nats/token)")
    ax.set_title("Knowledge gained vs forgetting (held-out)")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, "pareto_forgetting")
