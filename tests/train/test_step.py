"""The loss, the optimizer's decay mask and the compiled training step, on a tiny TinyGPT."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from tinygpt_mlx.config import Config, ModelConfig
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.step import TrainStep

VOCAB, T = 11, 8


def tiny_config(**runtime) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(d_model=16, n_layers=2, n_heads=2, max_seq_len=T)
    cfg.schedule.warmup_steps = 0
    cfg.schedule.lr_schedule = "constant"
    cfg.optim.lr = 1e-2
    for key, value in runtime.items():
        setattr(cfg.runtime, key, value)
    return cfg


def build(cfg: Config, seed: int = 0, **step_kwargs) -> tuple[TinyGPT, TrainStep]:
    mx.random.seed(seed)
    model = TinyGPT(cfg.model, VOCAB)
    step = TrainStep(model, build_optimizer(cfg, total_steps=10), cfg, **step_kwargs)
    return model, step


def batch(accum: int, b: int, seed: int = 1) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, size=(accum, b, T + 1))
    return mx.array(tokens[..., :-1]), mx.array(tokens[..., 1:])


def run(step: TrainStep, x: mx.array, y: mx.array) -> tuple[float, float, bool]:
    loss, grad_norm, ok = step(x, y)
    mx.eval(step.state, loss, grad_norm, ok)
    return loss.item(), grad_norm.item(), ok.item()


def flat(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(tree) if isinstance(v, mx.array)}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)


def same_with_nan(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


# --- loss ---------------------------------------------------------------------------------------


def test_uniform_logits_give_log_vocab() -> None:
    logits, targets = mx.zeros((2, 3, VOCAB)), mx.array([[0, 5, 10], [1, 2, 3]])
    assert cross_entropy_loss(logits, targets).item() == pytest.approx(math.log(VOCAB), rel=1e-6)
    assert cross_entropy_loss(logits, targets, reduction="sum").item() == pytest.approx(6 * math.log(VOCAB), rel=1e-6)
    per_token = cross_entropy_loss(logits, targets, reduction="none")
    assert per_token.shape == (2, 3)


def test_loss_matches_hand_computation_in_float32() -> None:
    logits = mx.array([[[1.0, 2.0, 3.0]]], dtype=mx.bfloat16)
    loss = cross_entropy_loss(logits, mx.array([[0]]))
    assert loss.dtype == mx.float32
    assert loss.item() == pytest.approx(math.log(math.e + math.e**2 + math.e**3) - 1.0, rel=1e-6)


# --- optimizer: weight decay on matrices only ---------------------------------------------------


@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_hits_matrices_only(name: str, decay_all: bool) -> None:
    cfg = tiny_config()
    cfg.optim.optimizer, cfg.optim.weight_decay, cfg.optim.decay_all = name, 0.5, decay_all
    mx.random.seed(0)
    model = TinyGPT(cfg.model, VOCAB)
    before = flat(model.trainable_parameters())
    opt = build_optimizer(cfg, total_steps=10)
    # With zero gradients the only change left is the decay: p * (1 - lr * wd).
    opt.update(model, tree_map(mx.zeros_like, model.trainable_parameters()))
    mx.eval(model.parameters())
    after = flat(model.trainable_parameters())
    decayed = {"h.0.attn.c_attn.weight", "h.1.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"}
    kept = {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.bias", "ln_f.bias"}
    for key in decayed | kept:
        factor = 1 - 1e-2 * 0.5 if (key in decayed or decay_all) else 1.0
        np.testing.assert_allclose(after[key], before[key] * factor, rtol=1e-6, atol=1e-9, err_msg=key)


# --- the training step --------------------------------------------------------------------------


def test_accumulation_equals_one_big_batch() -> None:
    # SGD without momentum so the update is the gradient itself; mean over equal token counts.
    results = []
    for accum, b in ((2, 2), (1, 4)):
        cfg = tiny_config(grad_accum_steps=accum)
        cfg.optim.optimizer, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.grad_clip = "sgd", 0.0, 0.0, 0.0
        model, step = build(cfg)
        x, y = batch(1, 4)
        loss, norm, ok = run(step, x.reshape(accum, b, T), y.reshape(accum, b, T))
        results.append((loss, norm, flat(model.parameters())))
    (loss_a, norm_a, params_a), (loss_b, norm_b, params_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert norm_a == pytest.approx(norm_b, rel=1e-5)
    assert max_diff(params_a, params_b) < 1e-6


def test_compiled_matches_uncompiled_over_three_steps() -> None:
    runs = []
    for compile_ in (True, False):
        model, step = build(tiny_config(compile=compile_, grad_accum_steps=2))
        losses = [run(step, *batch(2, 2))[0] for _ in range(3)]  # same batch: loss must fall
        runs.append((losses, flat(model.parameters()), flat(step.optimizer.state)))
    (losses_c, params_c, opt_c), (losses_u, params_u, opt_u) = runs
    assert losses_c == pytest.approx(losses_u, abs=1e-6)
    assert losses_c[2] < losses_c[0]
    assert max_diff(params_c, params_u) < 1e-6
    assert max_diff(opt_c, opt_u) < 1e-6


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_clipping_caps_the_update_norm(clip: float) -> None:
    cfg = tiny_config()
    cfg.optim.optimizer, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.grad_clip = "sgd", 0.0, 0.0, clip
    cfg.optim.lr = 1.0
    model, step = build(cfg)
    before = flat(model.parameters())
    _, grad_norm, _ = run(step, *batch(1, 4))
    after = flat(model.parameters())
    update_norm = math.sqrt(sum(float(np.sum((after[k] - before[k]).astype(np.float64) ** 2)) for k in after))
    assert grad_norm > 1e-2  # reported before clipping
    assert update_norm == pytest.approx(clip if clip else grad_norm, rel=1e-4)


@pytest.mark.parametrize("compile_", [True, False])
def test_nonfinite_loss_never_reaches_weights_or_optimizer_state(compile_: bool) -> None:
    model, step = build(tiny_config(compile=compile_))
    assert run(step, *batch(1, 4))[2] is True  # a good step first, so the Adam moments are not zero
    model.h[0].mlp.c_fc.weight[0, 0] = mx.nan
    mx.eval(model.parameters())
    params, opt_state = flat(model.parameters()), flat(step.optimizer.state)
    loss, _, ok = run(step, *batch(1, 4, seed=2))
    assert math.isnan(loss) and ok is False
    assert same_with_nan(flat(model.parameters()), params)
    assert same_with_nan(flat(step.optimizer.state), opt_state)


def test_bfloat16_step_is_finite_and_close_to_float32() -> None:
    results = {}
    for precision in ("float32", "bfloat16"):
        model, step = build(tiny_config(precision=precision))
        losses = [run(step, *batch(1, 4, seed=s))[0] for s in range(3)]
        results[precision] = losses
        assert all(p.dtype == mx.float32 for _, p in tree_flatten(model.parameters()))
        assert all(v.dtype != mx.bfloat16 for _, v in tree_flatten(step.optimizer.state))
    assert all(math.isfinite(v) for v in results["bfloat16"])
    assert results["bfloat16"] == pytest.approx(results["float32"], abs=2e-2)


def test_float16_loss_scaling_skips_overflow_then_grows() -> None:
    model, step = build(tiny_config(precision="float16"), loss_scale=2.0**40, growth_interval=2)
    params = flat(model.parameters())
    loss, grad_norm, ok = run(step, *batch(1, 4))
    # The scaled float16 backward overflows: skipped, scale halved, but not reported as a bad step.
    assert math.isfinite(loss) and not math.isfinite(grad_norm) and ok is True
    assert step.loss_scale == 2.0**39
    assert max_diff(flat(model.parameters()), params) == 0.0

    model, step = build(tiny_config(precision="float16"), growth_interval=2)
    ref_model, ref_step = build(tiny_config())
    for s in range(2):
        loss, grad_norm, ok = run(step, *batch(1, 4, seed=s))
        ref_loss = run(ref_step, *batch(1, 4, seed=s))[0]
        assert ok and math.isfinite(grad_norm) and loss == pytest.approx(ref_loss, abs=1e-2)
    assert step.loss_scale == 2.0**16  # doubled after two good steps
    assert all(p.dtype == mx.float32 for _, p in tree_flatten(model.parameters()))


def test_dropout_in_the_compiled_step_is_reproducible_from_the_seed() -> None:
    def losses(seed: int) -> list[float]:
        cfg = tiny_config()
        cfg.model.dropout = 0.3
        _, step = build(cfg)
        mx.random.seed(seed)
        return [run(step, *batch(1, 4))[0] for _ in range(3)]

    first = losses(5)
    assert losses(5) == first
    assert losses(6) != first
