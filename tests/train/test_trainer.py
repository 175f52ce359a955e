"""The training loop on the tiny corpus: every run artefact, metric values, best/last, init-from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import pytest
import yaml

from tinygpt_mlx import device as device_lib
from tinygpt_mlx.config import ConfigError, from_dict, load_config
from tinygpt_mlx.device import gpu_available, select_device
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.inputs import total_steps_for
from tinygpt_mlx.train.metrics import read_metrics
from tinygpt_mlx.train.schedule import build_schedule
from tinygpt_mlx.train.trainer import train

B, T = 4, 32
SECTIONS = {
    "schedule": {"max_steps": 12, "warmup_steps": 2, "min_lr": 3e-4},
    "runtime": {"log_interval": 4},
    "eval": {"eval_every": 6, "eval_subset": 2048, "sample_n": 2, "sample_max_new_tokens": 20},
    "checkpoint": {"save_every": 6, "keep_last_k": 5},
}


def tiny(root: Path, make_config, **sections: dict) -> object:
    """The suite's tiny config (2 layers, 32 wide, char tokens) for 12 steps, evals and saves at 6 and 12."""
    merged = {name: {**SECTIONS.get(name, {}), **sections.get(name, {})} for name in {*SECTIONS, *sections}}
    return make_config(root, **merged)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="module")
def finished(root: Path, make_config):
    """One 12-step run shared by the artefact tests."""
    cfg = tiny(root, make_config)
    return cfg, train(cfg, live=False)


def test_result_and_checkpoints(finished) -> None:
    cfg, result = finished
    run = Path(cfg.checkpoint.save_dir)
    assert (result.step, result.total_steps, result.exit_code) == (12, 12, 0)
    assert result.tokens_seen == 12 * B * T
    assert sorted(result.losses) == list(range(1, 13))
    assert [ck.step_of(p) for p in ck.list_checkpoints(run)] == [6, 12]
    assert (run / "last").resolve() == run / "step-0000012" == result.last_checkpoint
    evals = read_metrics(run / "metrics.jsonl", "eval")
    best_step = min(evals, key=lambda r: r["val_loss"])["step"]
    assert (run / "best").resolve() == run / ck.step_dir_name(best_step)
    state = json.loads((run / "step-0000012" / "state.json").read_text())
    assert state["step"] == 12 and state["tokens_seen"] == 12 * B * T
    assert state["best"] == {"metric": "val_loss", "value": min(r["val_loss"] for r in evals), "step": best_step}
    assert state["nonfinite"] == {"consecutive": 0, "total": 0}
    assert set(state["rng"]) == {"python", "numpy", "mlx"} and "sampler" in state


def test_run_config_and_env(finished) -> None:
    cfg, _ = finished
    run = Path(cfg.checkpoint.save_dir)
    assert load_config(run / "run_config.yaml") == cfg
    assert yaml.safe_load((run / "step-0000012" / "config.yaml").read_text()) == cfg.to_dict()
    env = json.loads((run / "env.json").read_text())
    assert {"git_sha", "python", "mlx", "numpy", "device", "blas"} <= set(env)


def test_train_metrics_values(finished) -> None:
    cfg, result = finished
    records = read_metrics(Path(cfg.checkpoint.save_dir) / "metrics.jsonl", "train")
    assert [r["step"] for r in records] == [4, 8, 12]
    keys = {"type", "step", "tokens_seen", "loss", "lr", "grad_norm", "tokens_per_sec", "step_ms",
            "peak_memory_bytes", "elapsed_s"}
    schedule = build_schedule(cfg.optim, cfg.schedule, 12)
    for r in records:
        assert set(r) == keys
        assert r["tokens_seen"] == r["step"] * B * T
        assert r["loss"] == result.losses[r["step"]]
        # The lr logged is the one the step used: the schedule at update r["step"] - 1.
        assert r["lr"] == pytest.approx(schedule(mx.array(r["step"] - 1, mx.uint64)).item(), rel=1e-6)
        assert r["grad_norm"] > 0 and r["tokens_per_sec"] > 0 and r["peak_memory_bytes"] > 0
        assert r["tokens_per_sec"] == pytest.approx(B * T / (r["step_ms"] / 1000), rel=1e-6)
    assert records[0]["elapsed_s"] <= records[1]["elapsed_s"] <= records[2]["elapsed_s"]
    # Starts near a uniform guess over the char vocabulary and learns something in 12 steps.
    vocab = ck.load_checkpoint(Path(cfg.checkpoint.save_dir)).vocab_size
    assert abs(result.losses[1] - math.log(vocab)) < 0.3
    assert result.losses[12] < result.losses[1] - 0.3


def test_eval_and_sample_records(finished) -> None:
    cfg, result = finished
    path = Path(cfg.checkpoint.save_dir) / "metrics.jsonl"
    evals = read_metrics(path, "eval")
    assert [r["step"] for r in evals] == [6, 12]
    for r in evals:
        assert set(r) == {"type", "step", "tokens_seen", "val_loss", "val_ppl", "val_bpb"}
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        # Char tokens of mostly-ASCII text: about one byte per token, so bpb is close to loss / ln 2.
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2), rel=0.05)
        assert r["val_bpb"] <= r["val_loss"] / math.log(2)  # a non-ASCII character takes more than one byte
    assert result.val_loss == evals[-1]["val_loss"] and result.val_bpb == evals[-1]["val_bpb"]
    samples = read_metrics(path, "sample")
    assert [r["step"] for r in samples] == [6, 6, 12, 12]
    assert all(r["text"].startswith("Once upon a time") and len(r["text"]) > 16 for r in samples)


def test_epochs_derive_steps() -> None:
    cfg = from_dict({"schedule": {"max_steps": None, "epochs": 2.0, "warmup_steps": 0},
                     "data": {"batch_size": 4, "block_size": 8}, "model": {"max_seq_len": 8}})
    assert total_steps_for(cfg, 1000) == math.ceil(2 * 1000 / 32)
    cfg.runtime.grad_accum_steps = 2
    assert total_steps_for(cfg, 1000) == math.ceil(2 * 1000 / 64)


def test_existing_run_needs_resume(finished, root: Path, make_config) -> None:
    with pytest.raises(UserError, match="already holds checkpoints.*--resume auto"):
        train(tiny(root, make_config), live=False)


def test_unknown_best_by(tmp_path: Path, make_config) -> None:
    with pytest.raises(ConfigError, match="checkpoint.best_by"):
        train(tiny(tmp_path, make_config, checkpoint={"best_by": "accuracy"}), live=False)


@pytest.mark.skipif(gpu_available(), reason="asks for a GPU where there is none")
def test_gpu_device_without_a_gpu_is_a_clear_error(tmp_path: Path, make_config) -> None:
    with pytest.raises(UserError, match="runtime.device is gpu, but MLX sees no GPU"):
        train(tiny(tmp_path, make_config, runtime={"device": "gpu"}), live=False)


def test_runtime_device_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = []
    monkeypatch.setattr(mx, "set_default_device", chosen.append)
    monkeypatch.setattr(device_lib, "gpu_available", lambda: True)
    for choice in ("auto", "cpu", "gpu"):
        select_device(choice)
    assert chosen == [mx.cpu, mx.gpu]  # auto keeps MLX's own default


def test_init_from_loads_weights_only(finished, tmp_path: Path, make_config) -> None:
    cfg, _ = finished
    source = ck.load_checkpoint(cfg.checkpoint.save_dir)
    # One step at learning rate 0 (warmup starts at 0) leaves the loaded weights exactly as they were.
    tuned_cfg = tiny(tmp_path, make_config, schedule={"max_steps": 1, "warmup_steps": 1},
                     model={"dropout": 0.1}, eval={"sample_n": 0})
    result = train(tuned_cfg, init_from=cfg.checkpoint.save_dir, live=False)
    tuned = ck.load_checkpoint(tuned_cfg.checkpoint.save_dir)
    assert result.step == 1 and tuned.state["step"] == 1
    assert all(mx.array_equal(tuned.weights[k], v).item() for k, v in source.weights.items())
    assert tuned.optimizer_state["states.0.step"].item() == 1  # a fresh optimizer


def test_init_from_refuses_other_tokenizer_or_shape(finished, tmp_path: Path, make_config) -> None:
    cfg, _ = finished
    wider = tiny(tmp_path / "a", make_config, model={"d_model": 64})
    with pytest.raises(UserError, match=r"different architecture: model\.d_model 32 -> 64"):
        train(wider, init_from=cfg.checkpoint.save_dir, live=False)
    fewer = tiny(tmp_path / "b", make_config, data={"max_stories": 3})
    with pytest.raises(UserError, match="tokenizer differs"):
        train(fewer, init_from=cfg.checkpoint.save_dir, live=False)
