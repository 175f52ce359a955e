"""Reading finished runs for scaling: one summary row per run folder, and sweep_summary.csv in and out.

Only JSON, YAML and safetensors headers are read, so fitting a sweep never needs MLX or a model.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train.metrics import METRICS_FILE, read_metrics

SUMMARY_FILE = "sweep_summary.csv"
DONE_FILE = "DONE"  # written by the sweep after a run finished cleanly
FAILED_FILE = "FAILED"  # written by the sweep after a run failed; removed when it is retried
# Columns after the swept keys, in this order.
COLUMNS = ("params", "non_embedding_params", "tokens_seen", "compute_flops", "steps", "final_val_loss",
           "best_val_loss", "final_val_bpb", "best_val_bpb", "wall_time_s", "run_dir")
EMBEDDING_TABLES = ("wte.weight", "wpe.weight", "embed_tokens.weight")


def _last_checkpoint(run_dir: Path) -> Path | None:
    link = run_dir / "last"
    if link.is_symlink() and (link / "manifest.json").is_file():
        return link.resolve()
    return None


def count_params(checkpoint: Path) -> tuple[int, int]:
    """(total, non-embedding) parameters from a checkpoint's safetensors header, without loading weights."""
    from safetensors import safe_open

    total = embedding = 0
    with safe_open(str(checkpoint / "model.safetensors"), framework="numpy") as f:
        for key in f.keys():
            size = math.prod(f.get_slice(key).get_shape())
            total += size
            # Kaplan et al. leave the lookup tables out of N; an untied lm_head is compute and stays in.
            embedding += size if key in EMBEDDING_TABLES else 0
    return total, total - embedding


def is_complete(run_dir: str | Path) -> bool:
    """A run is complete when the sweep marked it DONE, or its final checkpoint and final eval exist."""
    run_dir = Path(run_dir)
    if (run_dir / DONE_FILE).is_file():
        return True
    last = _last_checkpoint(run_dir)
    if last is None:
        return False
    state = json.loads((last / "state.json").read_text())
    step = state.get("step", 0)
    if step < state.get("total_steps", math.inf):
        return False
    return any(r.get("step") == step for r in read_metrics(run_dir / METRICS_FILE, "eval"))


def _status(run_dir: Path) -> str:
    if is_complete(run_dir):
        return "done"
    if (run_dir / FAILED_FILE).is_file():
        return "failed"
    return "incomplete" if (run_dir / METRICS_FILE).is_file() else "pending"


def summarize_run(run_dir: str | Path, name: str | None = None, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """One summary row: swept values, sizes, tokens, compute (6 N D, N non-embedding), losses, wall time."""
    run_dir = Path(run_dir)
    row: dict[str, Any] = {"name": name or run_dir.name, "status": _status(run_dir), **(values or {})}
    row.update({c: None for c in COLUMNS})
    row["run_dir"] = str(run_dir)
    evals = read_metrics(run_dir / METRICS_FILE, "eval")
    trains = read_metrics(run_dir / METRICS_FILE, "train")
    last = _last_checkpoint(run_dir)
    if last is not None:
        row["params"], row["non_embedding_params"] = count_params(last)
    if evals:
        final = evals[-1]
        row["steps"], row["tokens_seen"] = final.get("step"), final.get("tokens_seen")
        row["final_val_loss"], row["final_val_bpb"] = final.get("val_loss"), final.get("val_bpb")
        for metric in ("val_loss", "val_bpb"):  # a hand-edited line may hold anything
            values = [e[metric] for e in evals if isinstance(e.get(metric), (int, float))]
            row[f"best_{metric}"] = min(values) if values else None
    if trains:
        # The trainer's clock (steps, evals, saves), carried across resumes; process start-up is left out.
        row["wall_time_s"] = trains[-1].get("elapsed_s")
    if row["non_embedding_params"] and row["tokens_seen"]:
        row["compute_flops"] = 6 * row["non_embedding_params"] * row["tokens_seen"]
    return row


def write_summary(rows: list[dict[str, Any]], path: str | Path, keys: list[str]) -> Path:
    """Write sweep_summary.csv (name, status, the swept keys, then COLUMNS), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "status", *keys, *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    os.replace(tmp, path)
    return path


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_summary(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a sweep_summary.csv with numbers parsed (empty cells become None)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path} is not a sweep summary CSV ({err})") from None
    if rows and not {"name", "status"} <= set(header):
        raise UserError(f"{path} is not a sweep summary CSV: its header lacks the name and status columns")
    for line, row in enumerate(rows, 2):
        if None in row or None in row.values():
            raise UserError(f"{path}:{line} has {'more' if None in row else 'fewer'} cells than the header")
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def collect(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Rows from sweep folders (their sweep_summary.csv), summary files, run folders or folders of runs."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"results not found: {path}")
        if path.is_file():
            rows += read_summary(path)
        elif (path / SUMMARY_FILE).is_file():
            rows += read_summary(path / SUMMARY_FILE)
        elif (path / METRICS_FILE).is_file():
            rows.append(summarize_run(path))
        elif path.is_dir():
            parent = path / "runs" if (path / "runs").is_dir() else path
            rows += [summarize_run(p) for p in sorted(parent.iterdir()) if (p / METRICS_FILE).is_file()]
    return rows
