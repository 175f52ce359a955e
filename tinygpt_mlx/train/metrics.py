"""What a run reports: `metrics.jsonl` (one JSON object per line) and the console (rich bar or plain lines).

Record types in metrics.jsonl, each with `type` and `step`:
- train:  step, tokens_seen, loss, lr, grad_norm, tokens_per_sec, step_ms, peak_memory_bytes, elapsed_s
- eval:   step, tokens_seen, val_loss, val_ppl, val_bpb
- sample: step, text
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl, optionally only those of one type; a torn last line is ignored."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if not isinstance(record, dict):
            continue  # not a record this log writes
        if kind is None or record.get("type") == kind:
            records.append(record)
    return records


def truncate_after(path: str | Path, step: int) -> int:
    """Drop records past `step` (resuming from a checkpoint at step); returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass  # a torn or garbled line, or a value that is not a record
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)  # the old file stays whole until the new one is complete
    return len(lines) - len(kept)


class MetricsLog:
    """Appends records to run_dir/metrics.jsonl, flushing each line so a crash loses at most one."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record of type `kind`; returns it."""
        record = {"type": kind, **fields}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        """Close the file (further writes fail)."""
        self._file.close()


class NullLog:
    """The metrics log of ranks other than 0: records are built (the console code reads them), not written."""

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The record metrics.jsonl would get."""
        return {"type": kind, **fields}

    def close(self) -> None:
        """Nothing to close."""


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Reporter:
    """Console output of a run: a live rich bar on a terminal, plain log lines otherwise (CI, files)."""

    def __init__(self, total_steps: int, start_step: int = 0, live: bool | None = None,
                 stream: TextIO | None = None):
        self.total = total_steps
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step,
                                                 loss="-", lr="-", tps="-")
            self._progress.start()

    def train(self, record: dict[str, Any], eta_s: float) -> None:
        """Show a train record."""
        if self._progress is not None:
            self._progress.update(self._task, completed=record["step"], loss=f"{record['loss']:.4f}",
                                  lr=f"{record['lr']:.2e}", tps=f"{record['tokens_per_sec']:,.0f}")
            return
        self.message(
            f"step {record['step']}/{self.total} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
            f"grad {record['grad_norm']:.3f} | {record['tokens_per_sec']:,.0f} tok/s | "
            f"{record['step_ms']:.0f} ms/step | eta {_duration(eta_s)}"
        )

    def eval(self, record: dict[str, Any]) -> None:
        """Show an eval record."""
        self.message(f"eval step {record['step']} | val_loss {record['val_loss']:.4f} | "
                     f"val_ppl {record['val_ppl']:.2f} | val_bpb {record['val_bpb']:.4f}")

    def sample(self, step: int, text: str) -> None:
        """Show one generation."""
        self.message(f"sample @ step {step}: {text!r}")

    def message(self, text: str) -> None:
        """Print a line above the bar (or plainly)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
