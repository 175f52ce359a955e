"""Plots: PNG + SVG written headless from metrics.jsonl and CSV rows; missing data is a note, not a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tinygpt_mlx.eval.plots import make_plots
from tinygpt_mlx.train.metrics import read_metrics

NAMES = ("loss", "lr", "val_loss_per_checkpoint")


def test_all_plots_written(tiny_run, tmp_path: Path) -> None:
    _, run = tiny_run
    rows = [{"step": 3, "tokens_seen": 96, "val_loss": 3.2}, {"step": 6, "tokens_seen": 192, "val_loss": 2.9}]
    report = make_plots(read_metrics(run / "metrics.jsonl"), rows, tmp_path / "plots")
    assert report.skipped == []
    want = sorted(f"{n}.{ext}" for n in NAMES for ext in ("png", "svg"))
    assert sorted(p.name for p in report.written) == want
    for path in report.written:
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in head or b"<?xml" in head
        assert path.stat().st_size > 1000


def test_no_data_is_skipped_with_notes(tmp_path: Path) -> None:
    report = make_plots([], [], tmp_path / "plots")
    assert report.written == []
    assert report.skipped == ["loss plot skipped: no train or eval records in metrics.jsonl",
                              "lr plot skipped: no train records in metrics.jsonl",
                              "val_loss_per_checkpoint plot skipped: no evaluated checkpoints"]
    # only eval records: the loss plot still draws validation loss; the lr plot is skipped
    only_eval = [{"type": "eval", "step": 2, "tokens_seen": 10, "val_loss": 1.5}]
    report = make_plots(only_eval, [], tmp_path / "p2")
    assert [p.name for p in report.written] == ["loss.png", "loss.svg"]


def test_headless_subprocess_never_touches_a_gui_backend(tmp_path: Path) -> None:
    # No DISPLAY and an interactive backend requested: figures are drawn without pyplot, so it still works.
    code = ("import sys; from tinygpt_mlx.eval.plots import make_plots; "
            "r = make_plots([{'type': 'train', 'step': 1, 'tokens_seen': 8, 'loss': 2.0, 'lr': 1e-3}], [], "
            "sys.argv[1]); print(len(r.written), 'matplotlib.pyplot' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin", "MPLBACKEND": "TkAgg", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "plots")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "False"]
    assert (tmp_path / "plots" / "lr.svg").is_file()
