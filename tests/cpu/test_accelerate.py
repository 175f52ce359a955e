"""The CPU seam, `tinygpt_mlx.cpu.accelerate`: everything on MLX's CPU backend, nothing at all on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx import device
from tinygpt_mlx.cpu import accelerate
from tinygpt_mlx.cpu.modules import CPU_MODULES
from tinygpt_mlx.cpu.step import LaneStep
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.step import TrainStep, make_train_step

from ..train.test_step import VOCAB, tiny_config


def model_and_step(**runtime) -> tuple[TinyGPT, TrainStep, object]:
    cfg = tiny_config(**runtime)
    cfg.data.batch_size = 4
    mx.random.seed(0)
    model = TinyGPT(cfg.model, VOCAB)
    return model, make_train_step(model, build_optimizer(cfg, total_steps=10), cfg), cfg


def module_types(model: TinyGPT) -> dict[str, type]:
    return {name: type(module) for name, module in model.named_modules()}


def test_on_a_gpu_model_and_step_come_back_unchanged(monkeypatch: pytest.MonkeyPatch):
    model, step, cfg = model_and_step()
    before = module_types(model)
    monkeypatch.setattr(device, "on_accelerator", lambda: True)
    got_model, got_step = accelerate(model, step, cfg)
    assert got_model is model and got_step is step
    assert module_types(model) == before


GPU_CHILD = """
import sys
import tinygpt_mlx
from tinygpt_mlx import device
device.on_accelerator = lambda: True
from tinygpt_mlx.config import Config, ModelConfig
from tinygpt_mlx.cpu import accelerate
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.step import make_train_step
cfg = Config()
cfg.model = ModelConfig(d_model=16, n_layers=1, n_heads=2, max_seq_len=8)
model = TinyGPT(cfg.model, 11)
step = make_train_step(model, build_optimizer(cfg, 10), cfg)
assert accelerate(model, step, cfg) == (model, step)
print(sorted(name for name in sys.modules if name.startswith("tinygpt_mlx.cpu")))
"""


def test_on_a_gpu_nothing_cpu_specific_is_imported():
    out = subprocess.run([sys.executable, "-c", GPU_CHILD], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TINYGPT_KERNEL_CACHE": "/nonexistent"})
    assert out.returncode == 0, out.stderr[-2000:]
    # tinygpt_mlx/__init__ loads the BLAS (and the cache folder helper it uses) before mlx.core on Linux.
    loaded_at_import = ["tinygpt_mlx.cpu.blas", "tinygpt_mlx.cpu.cache"] if sys.platform.startswith("linux") else []
    assert out.stdout.strip() == str(["tinygpt_mlx.cpu", *loaded_at_import])


@pytest.mark.skipif(mx.default_device().type != mx.DeviceType.cpu, reason="MLX's CPU backend only")
@pytest.mark.parametrize(("threads", "lanes"), [(0, 2), (2, 2), (1, 1)])
def test_on_the_cpu_modules_are_swapped_in_place_and_lanes_split_the_batch(threads: int, lanes: int):
    model, step, cfg = model_and_step(cpu_threads=threads)
    params, before = dict(tree_flatten(model.parameters())), module_types(model)
    got_model, got_step = accelerate(model, step, cfg)
    assert got_model is model
    expected = {name: CPU_MODULES.get(kind, kind) for name, kind in before.items()}
    assert module_types(model) == expected
    # drop and ln_f; per block ln_1, attn, its resid_dropout, ln_2, mlp and its dropout
    assert sum(kind in CPU_MODULES.values() for kind in expected.values()) == 2 + 2 * 6
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == params.keys() and all(after[k] is params[k] for k in params)  # same arrays, same names
    if lanes == 1:
        assert got_step is step
    else:
        assert isinstance(got_step, LaneStep) and got_step.lanes.size == lanes
        assert got_step.state is step.state and got_step.scaler is step.scaler
        assert got_step.model is model and got_step.optimizer is step.optimizer
        assert got_step.loss_scale == step.loss_scale == 1.0
