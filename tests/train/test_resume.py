"""Exact resume on both backends: 40 steps straight equal 20 + (SIGINT, checkpoint) + resume + 20, dropout on."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import inputs, trainer
from tinygpt_mlx.train.metrics import read_metrics

STEPS, STOP = 40, 20
TIMING = ("tokens_per_sec", "step_ms", "elapsed_s", "peak_memory_bytes")
# Dropout on, eval and periodic saves off the stop step, so the resume has to carry everything.
SECTIONS = {
    "model": {"dropout": 0.1},
    "schedule": {"max_steps": STEPS, "warmup_steps": 5, "min_lr": 3e-4},
    "runtime": {"log_interval": 1, "grad_accum_steps": 2},
    "eval": {"eval_every": 15, "eval_subset": 1024, "sample_n": 1, "sample_max_new_tokens": 10},
    "checkpoint": {"save_every": 1000, "keep_last_k": 2},
}


@pytest.fixture
def tiny(make_config):
    """tiny(root, **section_overrides) -> the suite's tiny config with SECTIONS, run folder root/run."""

    def make(root: Path, **sections: dict) -> object:
        merged = {name: {**SECTIONS.get(name, {}), **sections.get(name, {})} for name in {*SECTIONS, *sections}}
        return make_config(root, **merged)

    return make


@pytest.fixture(params=["mlx", "torch"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(1)  # a shared 2-core box: torch's spinning thread pool slows tiny steps
    return request.param


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int, sig: int = signal.SIGINT) -> None:
    """Deliver a real signal while step `step` runs (when the loop prefetches the batch after it)."""
    real_next = inputs.Batches.next
    calls = {"n": 0}

    def next_batch(self: inputs.Batches):
        calls["n"] += 1
        if calls["n"] == step + 1:  # call 1 is the first batch; call k + 1 happens during step k
            os.kill(os.getpid(), sig)
        return real_next(self)

    monkeypatch.setattr(inputs.Batches, "next", next_batch)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, make_config):
    root = tmp_path_factory.mktemp("straight")
    cfg = make_config(root, **SECTIONS)
    return trainer.train(cfg, live=False), Path(cfg.checkpoint.save_dir)


def test_resume_is_exact(backend: str, tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Straight vs stopped at 20 and resumed: every loss, weight, moment and generator state bit for bit."""
    full_cfg = tiny(tmp_path / "straight", runtime={"backend": backend})
    full = trainer.train(full_cfg, live=False)
    cfg = tiny(tmp_path / "split", runtime={"backend": backend})
    with monkeypatch.context() as patch:
        interrupt_at(patch, STOP)
        first = trainer.train(cfg, live=False)
    run = Path(cfg.checkpoint.save_dir)
    assert (first.step, first.exit_code) == (STOP, 130)
    assert first.last_checkpoint == run / ck.step_dir_name(STOP)
    second = trainer.train(cfg, resume="auto", live=False)
    assert (second.step, second.exit_code) == (STEPS, 0)

    # Identical per-step losses, before and after the stop.
    assert {**first.losses, **second.losses} == full.losses
    assert sorted(second.losses) == list(range(STOP + 1, STEPS + 1))
    # Identical final weights and optimizer state (moments and step count), bit for bit.
    a, b = ck.load_checkpoint(full_cfg.checkpoint.save_dir), ck.load_checkpoint(run)
    assert a.weights.keys() == b.weights.keys() and a.optimizer_state.keys() == b.optimizer_state.keys()
    assert all(mx.array_equal(a.weights[k], b.weights[k]).item() for k in a.weights)
    assert all(mx.array_equal(a.optimizer_state[k], b.optimizer_state[k]).item() for k in a.optimizer_state)
    assert b.optimizer_state["states.0.step"].item() == STEPS
    assert a.state["rng"] == b.state["rng"] and a.state["sampler"] == b.state["sampler"]
    assert set(b.state["rng"]) == {"python", "numpy", "mlx"} | ({"torch"} if backend == "torch" else set())
    assert a.state["best"] == b.state["best"] and a.state["loss_scale"] == b.state["loss_scale"]
    # metrics.jsonl tells the same story (timings aside), samples included.
    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(path / "metrics.jsonl")]
    assert strip(run) == strip(Path(full_cfg.checkpoint.save_dir))


def copy_run(src: Path, root: Path) -> Path:
    """A copy of run folder src as root/run (the tiny config's run folder)."""
    shutil.copytree(src, root / "run", symlinks=True)
    return root / "run"


def test_resume_truncates_metrics_past_checkpoint(straight, tiny, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _, full_dir = straight
    # A copy of the finished run whose newest checkpoint is corrupt: auto falls back to step 30.
    # (Each eval set a new best and got its own checkpoint; keep_last_k 2 left 30 and 40.)
    run = copy_run(full_dir, tmp_path)
    assert [ck.step_of(p) for p in ck.list_checkpoints(run)] == [30, 40]
    (run / "step-0000040" / "state.json").write_text("{}")
    cfg = tiny(tmp_path, schedule={"max_steps": 31}, eval={"eval_every": 100})
    with caplog.at_level(logging.WARNING):
        result = trainer.train(cfg, resume="auto", live=False)
    assert "step-0000040" in caplog.text and "state.json is corrupt" in caplog.text
    assert result.step == 31 and list(result.losses) == [31]
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert steps == list(range(1, 32))
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", "eval")] == [15, 30, 31]


def test_resume_explicit_path_and_nothing_to_resume(tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="corrupt|not found|incomplete"):
        trainer.train(tiny(tmp_path), resume=str(tmp_path / "run" / "step-0000007"), live=False)
    fresh = trainer.train(tiny(tmp_path / "new", schedule={"max_steps": 2, "warmup_steps": 1}),
                          resume="auto", live=False)
    assert fresh.step == 2 and sorted(fresh.losses) == [1, 2]


@pytest.mark.parametrize("change, message", [
    ({"model": {"n_layers": 3}}, r"different architecture: model\.n_layers 2 -> 3"),
    ({"model": {"d_model": 64}}, r"model\.d_model 32 -> 64"),
    ({"model": {"arch": "llama"}}, r"model\.arch gpt2 -> llama"),
    ({"data": {"max_stories": 3}}, "tokenizer differs"),
    ({"optim": {"optimizer": "sgd"}}, r"optim\.optimizer adamw -> sgd"),
])
def test_resume_refuses_incompatible_change(straight, tiny, tmp_path: Path, change: dict, message: str) -> None:
    _, full_dir = straight
    with pytest.raises(UserError, match=message):
        trainer.train(tiny(tmp_path, **change), resume=str(full_dir / "last"), live=False)


def test_resume_allows_longer_run_and_new_logging(straight, tiny, tmp_path: Path) -> None:
    _, full_dir = straight
    run = copy_run(full_dir, tmp_path)
    cfg = tiny(tmp_path, schedule={"max_steps": 43}, runtime={"log_interval": 3},
               eval={"eval_every": 7, "sample_n": 0}, model={"dropout": 0.0})
    result = trainer.train(cfg, resume="auto", live=False)
    assert result.step == 43 and sorted(result.losses) == [41, 42, 43]
    records = read_metrics(run / "metrics.jsonl", "train")
    assert [r["step"] for r in records][-4:] == [39, 40, 42, 43]  # old lines stay; the new interval applies
