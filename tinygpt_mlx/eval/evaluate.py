"""Checkpoints -> evaluation_results.csv, samples.jsonl and plots: the numbers a run is judged by.

The scores come from eval/loss.py, which the trainer logs with too, so the CSV and the training log agree
to the last digit on the same windows. This module finds checkpoints, builds the validation set each one
must be scored on, and writes the artefacts.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_mlx.config import Config, apply_overrides, from_dict, read_file
from tinygpt_mlx.data.loader import TokenFile, eval_windows, windows
from tinygpt_mlx.data.prepare import check_fingerprint, prepare_data
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.eval.loss import evaluate, target_bytes
from tinygpt_mlx.eval.plots import PlotReport, make_plots
from tinygpt_mlx.eval.samples import sample_records
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.metrics import METRICS_FILE, read_metrics

RESULTS_FILE = "evaluation_results.csv"
SAMPLES_FILE = "samples.jsonl"
PLOTS_DIR = "plots"
COLUMNS = ("checkpoint", "step", "tokens_seen", "val_loss", "val_ppl", "val_bpb", "eval_tokens", "eval_bytes",
           "params", "non_embedding_params", "eval_seconds")


@dataclass
class ValidationSet:
    """Inputs and targets [windows, block] of the validation windows and the UTF-8 bytes the targets spell."""

    x: np.ndarray
    y: np.ndarray
    n_bytes: int


@dataclass
class EvalReport:
    """Everything `evaluate_run` produced."""

    rows: list[dict[str, Any]]
    results_path: Path
    samples_path: Path
    plots: PlotReport


def find_checkpoints(checkpoint_dir: str | Path | None, checkpoint: str | Path | None = None) -> list[Path]:
    """The checkpoint folders to evaluate, oldest first; a corrupt one or none at all is a UserError."""
    if checkpoint is not None:
        folder = ck.resolve_checkpoint(checkpoint)
        ck.verify_checkpoint(folder)
        return [folder]
    if checkpoint_dir is None:
        raise UserError("give --checkpoint_dir (a run folder) or --checkpoint (one checkpoint)")
    run = Path(checkpoint_dir)
    if not run.is_dir():
        raise UserError(f"checkpoint folder not found: {run}")
    if (run / ck.MANIFEST).is_file():  # a single step folder given as the directory
        ck.verify_checkpoint(run)
        return [run.resolve()]
    # A step folder without a manifest is an unfinished save and is skipped; one whose files do not
    # match its manifest is damage the user must hear about, so verify_checkpoint raises for it.
    found = [folder for folder in ck.step_folders(run) if (folder / ck.MANIFEST).is_file()]
    if not found:
        raise UserError(f"no complete checkpoint in {run} (expected step-NNNNNNN folders with manifest.json)")
    for folder in found:
        ck.verify_checkpoint(folder)
    return found


def eval_config(saved: Config, config: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """--config (or the checkpoint's own config) plus overrides; the model section is always the saved one."""
    raw = read_file(config) if config else saved.to_dict()
    raw = apply_overrides(raw, list(overrides))
    raw["model"] = saved.to_dict()["model"]  # the weights fix the architecture; nothing may change it
    return from_dict(raw)


def validation_set(cfg: Config, tokenizer: Any, full: bool, checkpoint: Path) -> ValidationSet:
    """Pinned validation windows (eval.eval_subset tokens, or the whole split) of data made with tokenizer."""
    data = prepare_data(cfg)
    try:
        check_fingerprint(data.meta, tokenizer)
    except UserError:
        raise UserError(
            f"the prepared data in {data.directory} was tokenized with a different tokenizer "
            f"({data.meta['tokenizer']['kind']}) than checkpoint {checkpoint} ({tokenizer.kind}); evaluate "
            "with the data settings the checkpoint was trained with (leave out --config and data.* overrides)"
        ) from None
    if data.meta["splits"]["val"]["tokens"] == 0:
        raise UserError(f"the validation split in {data.directory} is empty (source: "
                        f"{data.meta['source']['description']}); evaluation needs validation text")
    tokens = TokenFile(data.val_path, data.meta["dtype"]).tokens
    block = cfg.data.block_size
    # A budget as large as the file makes eval_windows tile the whole split without overlap.
    budget = len(tokens) if full else cfg.eval.eval_subset
    x, y = windows(tokens, eval_windows(len(tokens), block, budget), block)
    return ValidationSet(x, y, target_bytes(tokenizer, y))


def evaluate_checkpoint(folder: Path, cfg: Config, model: Any, tokenizer: Any, state: dict[str, Any],
                        val: ValidationSet) -> dict[str, Any]:
    """One CSV row: the checkpoint's validation scores, size and eval wall time."""
    start = time.perf_counter()
    scores = evaluate(model, val.x, val.y, val.n_bytes, cfg.data.batch_size)
    seconds = time.perf_counter() - start
    return {
        "checkpoint": folder.name, "step": int(state["step"]),
        "tokens_seen": int(state.get("tokens_seen", 0)),
        "val_loss": scores["val_loss"], "val_ppl": scores["val_ppl"], "val_bpb": scores["val_bpb"],
        "eval_tokens": int(val.y.size), "eval_bytes": val.n_bytes,
        "params": model.num_params(), "non_embedding_params": model.num_params(non_embedding=True),
        "eval_seconds": round(seconds, 3),
    }


def write_results(rows: list[dict[str, Any]], path: Path) -> None:
    """evaluation_results.csv: a header of COLUMNS, one row per checkpoint; floats at full precision."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def evaluate_run(checkpoint_dir: str | Path | None, output_dir: str | Path, config: str | Path | None = None,
                 checkpoint: str | Path | None = None, full: bool = False,
                 overrides: list[str] | tuple[str, ...] = (), say: Any = print) -> EvalReport:
    """Score every complete checkpoint of a run (or one); write CSV, samples.jsonl, plots/ to output_dir."""
    folders = find_checkpoints(checkpoint_dir, checkpoint)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    val_sets: dict[str, ValidationSet] = {}  # checkpoints of one run share their validation windows
    for folder in folders:
        model, tokenizer, saved, state = ck.load_for_inference(folder)
        cfg = eval_config(saved, config, overrides)
        key = json.dumps([asdict(cfg.data), cfg.eval.eval_subset, full, tokenizer.fingerprint],
                         sort_keys=True)
        if key not in val_sets:
            val_sets[key] = validation_set(cfg, tokenizer, full, folder)
        row = evaluate_checkpoint(folder, cfg, model, tokenizer, state, val_sets[key])
        rows.append(row)
        say(f"{folder.name}: val_loss {row['val_loss']:.4f} | val_bpb {row['val_bpb']:.4f} "
            f"({row['eval_tokens']:,} tokens, {row['eval_seconds']:.1f}s)")
        samples += sample_records(model, tokenizer, cfg.eval, cfg.runtime.seed, folder.name, row["step"])
    results_path, samples_path = out / RESULTS_FILE, out / SAMPLES_FILE
    write_results(rows, results_path)
    lines = [json.dumps(s, ensure_ascii=False) + "\n" for s in samples]
    samples_path.write_text("".join(lines), encoding="utf-8")
    # metrics.jsonl sits next to the step folders, in the run folder.
    plots = make_plots(read_metrics(folders[0].parent / METRICS_FILE), rows, out / PLOTS_DIR)
    return EvalReport(rows, results_path, samples_path, plots)
