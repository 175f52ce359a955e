"""LaneStep (cpu/step.py): the training step with its gradients from CPU lanes, as `accelerate` builds it."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.config import Config, validate
from tinygpt_mlx.cpu import accelerate
from tinygpt_mlx.cpu.step import LaneStep
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.step import TrainStep, make_train_step

from ..train.test_step import VOCAB, batch, flat, run, tiny_config


def build(cfg: Config, seed: int = 0) -> tuple[TinyGPT, TrainStep | LaneStep]:
    """A tiny model and its step through the CPU seam, as the trainer builds them."""
    mx.random.seed(seed)
    model = TinyGPT(cfg.model, VOCAB)
    return accelerate(model, make_train_step(model, build_optimizer(cfg, total_steps=10), cfg), cfg)


def test_config_checks_cpu_threads():
    cfg = tiny_config(cpu_threads=-1)
    assert any("runtime.cpu_threads must be >= 0" in p for p in validate(cfg))
    cfg = tiny_config(cpu_threads=3)
    cfg.data.batch_size = 16
    assert any("runtime.cpu_threads (3) must divide data.batch_size (16)" in p for p in validate(cfg))


def test_two_lanes_match_one_lane():
    x, y = batch(2, 4)
    results = {}
    for threads in (1, 2):
        cfg = tiny_config(cpu_threads=threads, grad_accum_steps=2)
        cfg.data.batch_size = 4
        model, step = build(cfg)
        assert isinstance(step, LaneStep if threads > 1 else TrainStep)
        assert (step.lanes.size if threads > 1 else 1) == threads
        metrics = [run(step, x, y) for _ in range(3)]
        results[threads] = (metrics, flat(model.parameters()))
    (m1, p1), (m2, p2) = results[1], results[2]
    for (l1, g1, ok1), (l2, g2, ok2) in zip(m1, m2, strict=True):
        assert ok1 and ok2
        assert l2 == pytest.approx(l1, rel=1e-5)
        assert g2 == pytest.approx(g1, rel=1e-4)
    # Adam divides by sqrt(v): float rounding in near-zero gradients moves a weight by up to ~1e-5 of
    # lr 1e-2 over three steps. Averaging the lanes wrongly (a sum, one lane only) moves them ~lr.
    for name in p1:
        np.testing.assert_allclose(p2[name], p1[name], atol=2e-4, err_msg=name)


def test_lanes_with_dropout_are_deterministic_and_draw_fresh_masks():
    x, y = batch(1, 4)
    runs = []
    for _ in range(2):
        cfg = tiny_config(cpu_threads=2)
        cfg.model.dropout = 0.5
        cfg.data.batch_size = 4
        model, step = build(cfg)
        assert step.lanes.size == 2
        losses = [run(step, x, y)[0] for _ in range(3)]
        runs.append((losses, flat(model.parameters())))
    assert runs[0][0] == runs[1][0]  # same seed: bit-identical
    for name in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][name], runs[1][1][name])
    # Fresh masks every step: with lr 0 the weights never move, so the loss on a fixed batch can only change
    # if the dropout masks do (a key frozen into the compiled trace would repeat the first loss).
    cfg = tiny_config(cpu_threads=2)
    cfg.model.dropout, cfg.data.batch_size, cfg.optim.lr = 0.5, 4, 0.0
    _, step = build(cfg)
    frozen_weight_losses = [run(step, x, y)[0] for _ in range(3)]
    assert len(set(frozen_weight_losses)) == 3


def test_uneven_batch_falls_back_to_one_stream():
    cfg = tiny_config(cpu_threads=2)
    cfg.data.batch_size = 4
    _, step = build(cfg)
    x, y = batch(1, 3)  # a 3-row batch cannot be split in 2
    loss, _, ok = run(step, x, y)
    assert ok and np.isfinite(loss)


def test_a_dropped_train_step_frees_its_model_and_stops_its_lanes():
    cfg = tiny_config(cpu_threads=2)
    cfg.data.batch_size = 4
    model, step = build(cfg)
    x, y = batch(1, 4)
    run(step, x, y)
    threads = list(step.lanes._threads)
    model_ref = weakref.ref(model)
    del model, step
    gc.collect()
    assert model_ref() is None  # bench and sweeps build many steps in one process
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


EXIT_SCRIPT = """
import mlx.core as mx
from tinygpt_mlx.config import Config, ModelConfig
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.step import make_train_step
from tinygpt_mlx.cpu import accelerate
cfg = Config()
cfg.model = ModelConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=32, dropout=0.1)
cfg.data.batch_size, cfg.runtime.cpu_threads = 8, 2
model = TinyGPT(cfg.model, 65)
model, step = accelerate(model, make_train_step(model, build_optimizer(cfg, 100), cfg), cfg)
x = mx.random.randint(0, 65, (8, 32))
for _ in range(2):
    loss, _, _ = step(x, mx.roll(x, -1, axis=1))
    mx.eval(step.state, loss)
"""


def test_a_process_that_trained_in_lanes_exits_cleanly():
    # Lanes that touch MLX's per-thread global random state (dropout) make most such processes abort at
    # exit (std::terminate, exit code 134): their dropout must draw from explicit keys.
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", "import tinygpt_mlx\n" + EXIT_SCRIPT], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
