"""Turn adapt.jsonl into the baseline/SEAL table and two plots.

All numbers are on the held-out contexts: no adaptation, training on the context itself, self-edits of
the base model (round 0), and self-edits of the SEAL policy after each round. Δ loss is in nats/token
of the no-context target loss; positive is better. Plots come from tinygpt_mlx.plotting.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.seal.records import ADAPT_LOG, read_records

NUMBER_FIELDS = ("delta_loss", "target_loss", "forgetting", "reward")  # of an `edit` record
TABLE_COLUMNS = ("method", "round", "contexts", "samples", "target_loss", "delta_loss", "delta_loss_se",
                 "forgetting", "reward", "beats_context", "train_reward", "kept")


def check_fields(records: list[dict[str, Any]], path: Path) -> None:
    """Refuse records that lack what the table and plots read (a file not written by `seal adapt`)."""
    for number, record in enumerate(records, 1):
        if record["type"] != "edit":
            fields: tuple[str, ...] = ("round",)
        else:
            fields = ("round", "split", "method", "context_id", *NUMBER_FIELDS)
        missing = [f for f in fields if f not in record]
        wrong = [f for f in NUMBER_FIELDS if f in record and record["type"] == "edit"
                 and not isinstance(record[f], (int, float))]
        grid = record.get("grid", [])
        if not isinstance(grid, list) or not all(isinstance(g, dict) and all(
                isinstance(g.get(k), (int, float)) for k in ("steps", "rank", "delta_loss", "forgetting"))
                for g in grid):
            wrong.append("grid")
        if missing or wrong or not isinstance(record["round"], int):
            what = f"lacks {', '.join(missing)}" if missing else f"has a non-number in {', '.join(wrong) or 'round'}"
            raise UserError(f"{path}: record {number} {what}; the file was not written by `seal adapt`")


def method_label(record: dict[str, Any]) -> str:
    """Row name of a held-out record in the table."""
    if record["method"] == "none":
        return "no adaptation"
    if record["method"] == "context":
        return "train on context"
    return "base-model self-edits" if record["round"] == 0 else f"SEAL round {record['round']}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _se(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method on the held-out contexts, in table order."""
    heldout = [r for r in records if r["type"] == "edit" and r["split"] == "heldout"]
    rounds = {r["round"]: r for r in records if r["type"] == "round"}
    context_delta = {r["context_id"]: r["delta_loss"] for r in heldout if r["method"] == "context"}
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in heldout:
        groups[method_label(r)].append(r)
    order = ["no adaptation", "train on context", "base-model self-edits"]
    order += sorted((k for k in groups if k.startswith("SEAL")), key=lambda k: int(k.split()[-1]))
    rows = []
    for label in order:
        if label not in groups:
            continue
        rs = groups[label]
        deltas = [r["delta_loss"] for r in rs]
        round_no = rs[0]["round"]
        seal_round = rounds.get(round_no, {}) if label.startswith("SEAL") else {}
        beats = [r["delta_loss"] > context_delta[r["context_id"]] for r in rs if r["context_id"] in context_delta]
        rows.append({
            "method": label, "round": round_no, "contexts": len({r["context_id"] for r in rs}),
            "samples": len(rs), "target_loss": _mean([r["target_loss"] for r in rs]),
            "delta_loss": _mean(deltas), "delta_loss_se": _se(deltas),
            "forgetting": _mean([r["forgetting"] for r in rs]), "reward": _mean([r["reward"] for r in rs]),
            "beats_context": _mean([float(b) for b in beats]) if label not in order[:2] else None,
            "train_reward": seal_round.get("train_reward"), "kept": seal_round.get("kept"),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """seal_table.csv and seal_table.md."""
    csv_path, md_path = out_dir / "seal_table.csv", out_dir / "seal_table.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows([{k: _cell(row[k]) for k in TABLE_COLUMNS} for row in rows])
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[k]) for k in TABLE_COLUMNS) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def grid_means(records: list[dict[str, Any]]) -> dict[str, dict[tuple[int, int], tuple[float, float]]]:
    """Per held-out method, per (steps, rank): mean (Δ loss, forgetting) over contexts and samples."""
    acc: dict[str, dict[tuple[int, int], list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["type"] == "edit" and r["split"] == "heldout":
            for p in r.get("grid", []):
                acc[method_label(r)][(p["steps"], p["rank"])].append((p["delta_loss"], p["forgetting"]))
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


def analyze(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the table (CSV + markdown) and both plots (PNG + SVG) for a run; returns rows and paths."""
    run_dir = Path(run_dir)
    records = read_records(run_dir / ADAPT_LOG)
    if not any(r["type"] == "round" for r in records):
        raise UserError(f"{run_dir / ADAPT_LOG} has no finished round yet; run `tinygpt seal adapt` first")
    check_fields(records, run_dir / ADAPT_LOG)
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(records)
    means = grid_means(records)
    paths = [*write_table(rows, out), *plot_budget(means, out), *plot_pareto(means, out)]
    return {"rows": rows, "paths": paths}
