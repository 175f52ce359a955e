"""metrics.jsonl writing (and the log of ranks that write none), resume truncation, the plain / live console."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tinygpt_mlx.train.metrics import MetricsLog, NullLog, Reporter, read_metrics, truncate_after

TRAIN = {"step": 10, "tokens_seen": 640, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.75, "tokens_per_sec": 2400.0,
         "step_ms": 26.7, "peak_memory_bytes": 123, "elapsed_s": 1.5}


def test_log_appends_flushed_lines(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    log.write("train", **TRAIN)
    # Readable before close: every line is flushed.
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"type": "train", **TRAIN}]
    log.write("eval", step=10, tokens_seen=640, val_loss=2.0, val_ppl=7.39, val_bpb=2.9)
    log.write("sample", step=10, text="Once upon a time\nthere")
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["train", "eval", "sample"]
    assert read_metrics(tmp_path / "metrics.jsonl", "sample")[0]["text"] == "Once upon a time\nthere"
    MetricsLog(tmp_path).close()  # reopening appends, never truncates
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3


def test_null_log_builds_the_records_the_console_reads() -> None:
    log = NullLog()
    assert log.write("eval", step=3, val_loss=2.0) == {"type": "eval", "step": 3, "val_loss": 2.0}
    log.close()


def test_truncate_after_resume_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(tmp_path)
    for step in (10, 20, 30, 40):
        log.write("train", **{**TRAIN, "step": step})
    log.write("eval", step=20, val_loss=1.0)
    log.close()
    with open(path, "a") as f:
        f.write('{"type": "train", "step": 5')  # a line torn by a crash
    assert truncate_after(path, 20) == 3
    assert [(r["type"], r["step"]) for r in read_metrics(path)] == [("train", 10), ("train", 20), ("eval", 20)]
    assert path.read_text().endswith("\n")
    assert truncate_after(tmp_path / "missing.jsonl", 3) == 0


def test_plain_reporter_lines() -> None:
    out = io.StringIO()
    rep = Reporter(total_steps=100, live=False, stream=out)
    rep.train(TRAIN, eta_s=125)
    rep.eval({"step": 10, "val_loss": 2.0, "val_ppl": 7.389, "val_bpb": 2.885})
    rep.sample(10, "Once upon")
    rep.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == ("step 10/100 | loss 2.5000 | lr 1.00e-03 | grad 0.750 | 2,400 tok/s | 27 ms/step "
                        "| eta 2m05s")
    assert lines[1] == "eval step 10 | val_loss 2.0000 | val_ppl 7.39 | val_bpb 2.8850"
    assert lines[2] == "sample @ step 10: 'Once upon'"


def test_live_reporter_shows_bar_fields() -> None:
    out = io.StringIO()
    rep = Reporter(total_steps=100, live=True, stream=out)
    rep.train(TRAIN, eta_s=125)
    rep.message("hello")
    rep.close()
    text = out.getvalue()
    assert "10/100" in text and "loss 2.5000" in text and "2,400 tok/s" in text and "hello" in text
