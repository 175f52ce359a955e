"""A sweep that crashed after its first run resumes without redoing it (tiny models, in-process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import tinygpt_mlx.scaling.runner as runner_module
from tinygpt_mlx.config import dump_config
from tinygpt_mlx.scaling.runner import SweepExecution, in_process_runner
from tinygpt_mlx.scaling.runs import DONE_FILE, FAILED_FILE, collect, is_complete, read_summary
from tinygpt_mlx.scaling.sweep import expand, load_sweep


class Crash(Exception):
    pass


@pytest.fixture
def sweep_file(tmp_path: Path, make_config) -> Path:
    base = make_config(tmp_path, model={"d_model": 16, "n_layers": 1}, schedule={"max_steps": 5},
                       eval={"eval_every": 5}, checkpoint={"save_every": 5})
    dump_config(base, tmp_path / "base.yaml")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base_config": "base.yaml", "grid": {"model.d_model": [16, 24]}}))
    return path


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path, sweep_file):
    out = tmp_path / "out"
    sweep = load_sweep(sweep_file)
    runs = expand(sweep, out)
    calls: list[str] = []

    def crash_on_second(run, config_path, log_path):
        calls.append(run.name)
        if run.name == "d_model-24":
            raise Crash  # the sweep process dies before the second run trains
        return in_process_runner(run, config_path, log_path)

    with pytest.raises(Crash):
        SweepExecution(sweep, runs, out, runner=crash_on_second, say=lambda _: None).execute()
    first = out / "runs" / "d_model-16"
    assert is_complete(first) and (first / DONE_FILE).is_file()
    metrics_before = (first / "metrics.jsonl").read_bytes()

    calls.clear()
    counting = lambda run, cfg, log: calls.append(run.name) or in_process_runner(run, cfg, log)  # noqa: E731
    code = SweepExecution(sweep, expand(sweep, out), out, runner=counting, say=lambda _: None).execute()
    assert code == 0
    assert calls == ["d_model-24"]  # the finished run was skipped
    assert (first / "metrics.jsonl").read_bytes() == metrics_before

    rows = read_summary(out / "sweep_summary.csv")
    assert [(r["name"], r["status"], r["model.d_model"]) for r in rows] == [
        ("d_model-16", "done", 16), ("d_model-24", "done", 24)]
    for row in rows:
        assert row["steps"] == 5 and row["tokens_seen"] == 5 * 4 * 32
        d = row["model.d_model"]
        # One block without the embedding tables: 12 d^2 + 13 d, plus the final LayerNorm (2 d).
        assert row["non_embedding_params"] == 12 * d * d + 13 * d + 2 * d
        assert row["compute_flops"] == 6 * row["non_embedding_params"] * row["tokens_seen"]
        assert row["best_val_loss"] <= row["final_val_loss"] < 5.0
        assert row["params"] > row["non_embedding_params"]

    # Without the DONE marker, the final checkpoint plus the final eval still count as complete.
    (first / DONE_FILE).unlink()
    assert is_complete(first)
    assert [r["name"] for r in collect([out / "runs"])] == ["d_model-16", "d_model-24"]


def test_a_failing_run_is_marked_and_retried(tmp_path, sweep_file):
    out = tmp_path / "out"
    sweep = load_sweep(sweep_file)
    fail = lambda run, cfg, log: 1  # noqa: E731
    assert SweepExecution(sweep, expand(sweep, out), out, runner=fail, say=lambda _: None).execute() == 0
    rows = read_summary(out / "sweep_summary.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert (out / "runs" / "d_model-16" / FAILED_FILE).is_file()
    assert (out / "configs" / "d_model-16.yaml").is_file() and (out / "sweep.yaml").is_file()


def test_parallel_jobs_split_the_cores_for_blas_and_lanes(tmp_path, monkeypatch):
    seen = {}

    class FakeProcess:
        def __init__(self, cmd, stdout, stderr, env):
            seen.update(env)

        def wait(self):
            return 0

    monkeypatch.delenv("TINYGPT_CPU_CORES", raising=False)
    monkeypatch.setattr(runner_module.subprocess, "Popen", FakeProcess)
    code = runner_module.subprocess_runner(threads=1)(None, tmp_path / "c.yaml", tmp_path / "log.txt")
    assert code == 0
    assert seen["TINYGPT_CPU_CORES"] == "1"
    assert seen["OPENBLAS_NUM_THREADS"] == os.environ.get("OPENBLAS_NUM_THREADS", "1")  # a user's value wins
