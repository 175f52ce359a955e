"""The torch optimizer is MLX's: same groups, same schedule values, and its state moves both ways by name."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from tinygpt_mlx.config import Config, from_dict
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer as build_mlx_optimizer
from tinygpt_mlx.train.step import TrainStep

torch = pytest.importorskip("torch")
from tinygpt_mlx.torch.model import from_mlx_init, load_mlx_weights, to_mlx  # noqa: E402
from tinygpt_mlx.torch.optim import LRSchedule, build_optimizer, state_from_mlx, state_to_mlx  # noqa: E402
from tinygpt_mlx.torch.step import TorchTrainStep  # noqa: E402

VOCAB, TOTAL = 40, 10


def config(optim: dict | None = None, schedule: dict | None = None) -> Config:
    return from_dict({
        "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_seq_len": 8},
        "data": {"block_size": 8},
        "optim": {"lr": 1e-2, **(optim or {})},
        "schedule": {"max_steps": TOTAL, "warmup_steps": 2, "min_lr": 1e-3, **(schedule or {})},
        "runtime": {"grad_accum_steps": 2, "compile": False},
    })


def batch(i: int) -> np.ndarray:
    """[accum, B, T + 1] token windows; x = [..., :-1], y = [..., 1:]."""
    return np.random.default_rng(i).integers(0, VOCAB, size=(2, 3, 9))


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_schedule_values_equal_mlx_optimizer(kind: str, warmup: int) -> None:
    """The rate torch uses at update k is bit for bit the one mlx's optimizer uses at its update k."""
    cfg = config(schedule={"lr_schedule": kind, "warmup_steps": warmup})
    opt = build_mlx_optimizer(cfg, TOTAL)
    params = {"w": mx.zeros((2, 2))}
    used = []
    for _ in range(TOTAL):
        params = opt.apply_gradients({"w": mx.ones((2, 2))}, params)
        used.append(opt.state["states"][0]["learning_rate"].item())
    schedule = LRSchedule(cfg, TOTAL)
    assert [schedule(k) for k in range(TOTAL)] == used
    # And the values are the documented ones: 0 -> lr over the warmup, min_lr at the last step.
    assert math.isclose(used[warmup], 1e-2, rel_tol=1e-6)
    assert math.isclose(used[-1], 1e-3 if kind != "constant" else 1e-2, rel_tol=1e-6)
    if warmup:
        assert used[0] == 0.0 and math.isclose(used[1], 1e-2 / warmup, rel_tol=1e-6)


def test_param_groups_follow_is_decayed() -> None:
    model = from_mlx_init(config().model, VOCAB)
    groups = build_optimizer(config(), model).param_groups
    assert [(g["prefix"], g["weight_decay"]) for g in groups] == [("states.0.", 0.1), ("states.1.", 0.0)]
    assert groups[0]["names"] == ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.mlp.c_fc.weight",
                                  "h.0.mlp.c_proj.weight", "h.1.attn.c_attn.weight", "h.1.attn.c_proj.weight",
                                  "h.1.mlp.c_fc.weight", "h.1.mlp.c_proj.weight"]
    assert "wte.weight" in groups[1]["names"] and "ln_f.bias" in groups[1]["names"]
    flat = build_optimizer(config({"weight_decay": 0.0}), model).param_groups
    assert [g["prefix"] for g in flat] == [""]


def mlx_steps(model: TinyGPT, cfg: Config, state: dict | None, first: int, n: int) -> tuple[dict, dict]:
    opt = build_mlx_optimizer(cfg, TOTAL)
    if state is not None:
        opt.state = tree_unflatten(list(state.items()))
    step = TrainStep(model, opt, cfg)
    for i in range(first, first + n):
        w = mx.array(batch(i))
        step(w[..., :-1], w[..., 1:])
        mx.eval(step.state)
    return dict(tree_flatten(model.parameters())), dict(tree_flatten(opt.state))


def torch_steps(weights: dict, cfg: Config, state: dict | None, first: int, n: int) -> tuple[dict, dict]:
    model = from_mlx_init(cfg.model, VOCAB)
    load_mlx_weights(model, weights)
    opt = build_optimizer(cfg, model)
    updates = state_from_mlx(opt, state, "test") if state is not None else 0
    step = TorchTrainStep(model, opt, LRSchedule(cfg, TOTAL), cfg, torch.device("cpu"), updates)
    for i in range(first, first + n):
        w = torch.from_numpy(batch(i)).long()
        step(w[..., :-1], w[..., 1:])
    return to_mlx(model.state_dict()), {k: mx.array(v) for k, v in state_to_mlx(opt, step.updates).items()}


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        x, y = np.array(a[k]), np.array(b[k])
        if k.endswith("attn.c_attn.bias") and x.ndim == 1:
            # The key bias's true gradient is 0 (softmax ignores a shift of a whole score row), so each
            # framework's is rounding noise (~1e-12), and Adam turns it into steps of lr * noise / eps:
            # up to ~1e-5 apart after 5 steps whatever the code. Only the query and value parts carry signal.
            d = x.shape[0] // 3
            assert np.allclose(x[d : 2 * d], y[d : 2 * d], rtol=1e-4, atol=1e-4), k
            x, y = np.delete(x, np.s_[d : 2 * d]), np.delete(y, np.s_[d : 2 * d])
        assert np.allclose(x, y, rtol=1e-4, atol=atol), k


@pytest.mark.parametrize("optim", [
    {},                                       # AdamW, decay on matrices: MLX MultiOptimizer states.0 / states.1
    {"weight_decay": 0.0},                    # one flat AdamW
    {"optimizer": "adam"},                    # Adam, flat
    {"optimizer": "sgd", "lr": 0.1},          # SGD with momentum, split
    {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "decay_all": True},
])
def test_optimizer_state_continues_across_frameworks(optim: dict) -> None:
    """3 MLX updates then 2 torch ones equal 5 MLX updates, and 3 torch then 2 MLX equal 5 torch."""
    cfg = config(optim)
    mx.random.seed(0)
    start = dict(tree_flatten(TinyGPT(cfg.model, VOCAB).parameters()))

    def fresh() -> TinyGPT:
        model = TinyGPT(cfg.model, VOCAB)
        model.load_weights(list(start.items()))
        return model

    mlx_w5, mlx_s5 = mlx_steps(fresh(), cfg, None, 0, 5)
    w3, s3 = mlx_steps(fresh(), cfg, None, 0, 3)
    mixed_w, mixed_s = torch_steps(w3, cfg, s3, 3, 2)
    assert_close(mixed_w, mlx_w5, atol=1e-5)
    assert_close(mixed_s, mlx_s5, atol=1e-6)
    step_key = "states.0.step" if "states.0.step" in mlx_s5 else "step"
    assert mixed_s[step_key].item() == 5 and mixed_s[step_key].dtype == mx.uint64

    torch_w5, torch_s5 = torch_steps(start, cfg, None, 0, 5)
    tw3, ts3 = torch_steps(start, cfg, None, 0, 3)
    model = fresh()
    model.load_weights(list(tw3.items()))
    back_w, back_s = mlx_steps(model, cfg, ts3, 3, 2)
    assert_close(back_w, torch_w5, atol=1e-5)
    assert_close(back_s, torch_s5, atol=1e-6)
    assert_close(torch_w5, mlx_w5, atol=1e-5)  # and the two frameworks agree with each other


def test_nonfinite_step_changes_nothing() -> None:
    cfg = config()
    model = from_mlx_init(cfg.model, VOCAB)
    opt = build_optimizer(cfg, model)
    step = TorchTrainStep(model, opt, LRSchedule(cfg, TOTAL), cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.ln_f.weight[0] = float("nan")
        before["ln_f.weight"][0] = float("nan")
    w = torch.from_numpy(batch(0)).long()
    loss, grad_norm, ok = step(w[..., :-1], w[..., 1:])
    assert not ok and not math.isfinite(loss) and step.updates == 0 and not opt.state
    assert all(torch.equal(v, before[k]) or torch.isnan(v).any() for k, v in model.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if k != "ln_f.weight")


def test_mlx_model_helper_is_pure() -> None:
    """from_mlx_init draws exactly what TinyGPT draws: same seed, same weights."""
    cfg = config().model
    mx.random.seed(5)
    twin = from_mlx_init(cfg, VOCAB)
    mx.random.seed(5)
    ref = dict(tree_flatten(TinyGPT(cfg, VOCAB).parameters()))
    assert all(np.array_equal(np.array(ref[k]), v.numpy()) for k, v in twin.state_dict().items())
    assert isinstance(TinyGPT(cfg, VOCAB), nn.Module)
