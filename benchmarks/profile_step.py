"""Where a training step's time goes: each kind of op timed on its own at the step's real shapes.

On the CPU, the product's step splits the batch over n lanes (threads with their own streams,
single-threaded BLAS; cpu/lanes.py) that run at once. So this profiles one lane: every component at the
lane's share of the batch (B / n rows) with BLAS at cores // n threads, against a one-lane step on that share.
The product's full n-lane step on the whole batch is printed alongside for reference.

Run by hand (not a test):

    python benchmarks/profile_step.py                 # reference shape, fp32
    python benchmarks/profile_step.py --stock-gelu    # GELU as mlx.nn.gelu_approx, not the CPU modules' GELU
    python benchmarks/profile_step.py --json profile.json

Rows: all linear-layer GEMMs (forward, input and weight gradients, the tied head included), attention
(the fused C++ kernel where it builds, else head split, causal SDPA and its backward, head merge), layer
norms, GELU (the kernels where they build, else cpu/gelu.py), cross-entropy, the embedding gathers and
their scatter-add gradients, the optimizer (clip + AdamW with decay mask + the non-finite guard, as
TrainStep.apply runs it), and data (window sampling from a token array + host-to-MLX copy). Each is
a compiled function with forward + backward where there is one, multiplied by its count per step. The
components and the full step alternate round by round; medians of wall and process CPU time are
reported. "other" is the full step minus the sum: residual adds, casts, graph scheduling, memory traffic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

# isort: off
import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core binds the slow one
import mlx.core as mx
import mlx.nn as nn
import numpy as np
# isort: on

from shapes import product_step, shape_parser

import tinygpt_mlx.model as model_lib
from tinygpt_mlx.config import Config
from tinygpt_mlx.cpu import blas, kernels
from tinygpt_mlx.cpu import lanes as lanes_lib
from tinygpt_mlx.cpu import modules as cpu_modules
from tinygpt_mlx.cpu.gelu import gelu_arith
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.train.optim import build_optimizer


def components(args: argparse.Namespace, cfg: Config, model: model_lib.TinyGPT, stock_gelu: bool) -> dict:
    """name -> (function of no arguments returning arrays to evaluate, count per step, FLOPs per call)."""
    B, T, d, V, L, H = args.batch, args.seq, args.d_model, args.vocab, args.n_layers, args.n_heads
    f = cfg.model.hidden_dim
    key = iter(mx.random.split(mx.random.key(0), 64))

    def rnd(*shape):
        a = mx.random.normal(shape, key=next(key))
        mx.eval(a)  # evaluate now: a lazy input would put the random draw inside the timed graph
        return a

    # GEMMs: y = x W^T, dx = g W, dW = g^T x for every linear layer, on [B*T, in] activations.
    shapes = [(d, 3 * d), (d, d), (d, f), (f, d)] * L + [(d, V)]
    gemm_in = [(rnd(B * T, i), rnd(o, i), rnd(B * T, o)) for i, o in shapes]

    def gemms():
        return [out for x, w, g in gemm_in for out in (x @ w.T, g @ w, g.T @ x)]

    gemm_flops = sum(3 * 2 * B * T * i * o for i, o in shapes)

    # Attention core, exactly as CausalSelfAttention does it between c_attn and c_proj.
    qkv, gy = rnd(B, T, 3 * d), rnd(B, T, d)
    scale = (d // H) ** -0.5

    def attn_core(qkv):
        if kernels.usable(qkv):  # the C++ kernel, where it builds
            return (kernels.self_attention(qkv, H, scale) * gy).sum()
        q, k, v = mx.split(qkv, 3, axis=-1)
        q, k, v = (a.reshape(B, T, H, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask="causal")
        return (y.transpose(0, 2, 1, 3).reshape(B, T, d) * gy).sum()

    attn = mx.grad(attn_core)
    attn_flops = 3 * 2 * 2 * B * H * T * T * (d // H)  # QK^T and PV, forward + 2x backward

    x_ln, g_ln, w_ln, b_ln = rnd(B, T, d), rnd(B, T, d), mx.ones((d,)), mx.zeros((d,))
    norm = cpu_modules.FusedLayerNorm(d, eps=cfg.model.layer_norm_eps)  # training mode: the kernel, where it builds

    def ln_loss(x, w, b):
        norm.update({"weight": w, "bias": b})
        return (norm(x) * g_ln).sum()

    ln = mx.grad(ln_loss, argnums=(0, 1, 2))
    x_fc, g_fc = rnd(B, T, f), rnd(B, T, f)

    def gelu_loss(x):
        if stock_gelu:
            return (nn.gelu_approx(x) * g_fc).sum()
        return ((kernels.gelu(x) if kernels.usable(x) else gelu_arith(x)) * g_fc).sum()  # as FusedMLP runs it

    gelu = mx.grad(gelu_loss)
    logits, targets = rnd(B, T, V), mx.random.randint(0, V, (B, T), key=next(key))
    mx.eval(targets)
    xent = mx.grad(lambda z: cross_entropy_loss(z, targets))
    idx, wte, wpe = mx.random.randint(0, V, (B, T), key=next(key)), rnd(V, d), rnd(T, d)
    mx.eval(idx)
    g_emb = rnd(B, T, d)
    embed = mx.grad(lambda a, b: ((a[idx] + b[mx.arange(T)]) * g_emb).sum(), argnums=(0, 1))

    # The optimizer as TrainStep.apply runs it: clip, AdamW (decay mask via MultiOptimizer), guard.
    optimizer = build_optimizer(cfg, 10_000)
    params = model.trainable_parameters()
    grads = nn.utils.tree_map(lambda p: 1e-3 * mx.ones_like(p), params)
    optimizer.init(params)
    mx.eval(grads, optimizer.state)
    state = [optimizer.state]

    def opt_update(grads):
        import mlx.optimizers as optim

        clipped, norm = optim.clip_grad_norm(grads, cfg.optim.grad_clip)
        ok = mx.isfinite(norm)
        new = optimizer.apply_gradients(clipped, params)
        return nn.utils.tree_map(lambda n, p: mx.where(ok, n, p), new, params)

    opt_compiled = mx.compile(opt_update, inputs=state, outputs=state)

    tokens = np.random.default_rng(0).integers(0, V, size=2_000_000, dtype=np.uint16)
    rng = np.random.default_rng(1)

    def data():
        starts = rng.integers(0, len(tokens) - T - 1, size=B)
        win = np.stack([tokens[s : s + T + 1] for s in starts]).astype(np.int32)
        return [mx.array(win[:, :-1]), mx.array(win[:, 1:])]

    gemms, attn, ln, gelu, xent, embed = (mx.compile(fn) for fn in (gemms, attn, ln, gelu, xent, embed))
    return {
        "GEMMs (linear layers + head, fwd+bwd)": (gemms, 1, gemm_flops),
        "attention (fused kernel; else SDPA + head split/merge)": (lambda: attn(qkv), L, attn_flops),
        "layer norm (fwd+bwd)": (lambda: ln(x_ln, w_ln, b_ln), 2 * L + 1, 0),
        "GELU (fwd+bwd)": (lambda: gelu(x_fc), L, 0),
        "cross-entropy (fwd+bwd)": (lambda: xent(logits), 1, 0),
        "embeddings (gather + scatter-add grad)": (lambda: embed(wte, wpe), 1, 0),
        "optimizer (clip + AdamW + guard)": (lambda: [opt_compiled(grads), state], 1, 0),
        "data (sample windows, copy to MLX)": (data, 1, 0),
    }


def main() -> None:
    p = shape_parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--stock-gelu", action="store_true", help="GELU as mlx.nn.gelu_approx, not the CPU modules' GELU")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.stock_gelu:  # the step's MLPs keep the model's own forward (nn.gelu_approx) in training too
        cpu_modules.CPU_MODULES.pop(model_lib.MLP)

    n_lanes = lanes_lib.auto_lanes(args.batch)
    lane_args = argparse.Namespace(**{**vars(args), "batch": args.batch // n_lanes})

    def train_step(batch: int, threads: int):
        cfg, model, step = product_step(args, batch, threads)
        x = mx.random.randint(0, args.vocab, (batch, args.seq), key=mx.random.key(1))
        y = mx.roll(x, -1, axis=1)
        mx.eval(x, y)

        def run():
            loss, _, _ = step(x, y)
            return [loss, step.state]

        return cfg, model, run

    cfg, model, lane_step = train_step(lane_args.batch, 1)
    _, _, full_step = train_step(args.batch, n_lanes)
    blas.set_threads(max(1, lanes_lib.usable_cores() // n_lanes))
    parts = components(lane_args, cfg, model, args.stock_gelu)
    runs = {"one lane's step": (lane_step, 1, 0), **parts}
    for fn, _, _ in runs.values():
        for _ in range(2):
            mx.eval(fn())
    walls = {k: [] for k in runs}
    cpus = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, (fn, count, _) in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                mx.eval(fn())
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)

    product = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        mx.eval(full_step())
        product.append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    total = med["one lane's step"]
    rows = []
    for name, (_, count, flops) in runs.items():
        rows.append({"component": name, "count_per_step": count, "ms": med[name] * 1e3, "cpu_ms": cpu[name] * 1e3,
                     "share": med[name] / total,
                     "gflops_per_s": flops * count / med[name] / 1e9 if flops else None})
    parts_sum = sum(med[k] for k in parts)
    rows.append({"component": "other (full step - sum of parts)", "count_per_step": 1, "ms": (total - parts_sum) * 1e3,
                 "cpu_ms": (cpu["one lane's step"] - sum(cpu[k] for k in parts)) * 1e3,
                 "share": (total - parts_sum) / total, "gflops_per_s": None})

    tokens = args.batch * args.seq
    full = statistics.median(product)
    print(f"d{args.d_model}/L{args.n_layers}/H{args.n_heads} seq {args.seq} batch {args.batch} vocab {args.vocab} fp32, "
          f"GELU: {'stock nn.gelu_approx' if args.stock_gelu else 'the CPU modules (kernel, else cpu/gelu.py)'}; "
          f"median of {args.rounds}")
    print(f"product step: {n_lanes} lanes x batch {lane_args.batch}, {full * 1e3:.0f} ms = {tokens / full:.0f} tokens/s; "
          f"one lane alone: {total * 1e3:.0f} ms (the lanes overlap {n_lanes * total / full:.2f}x)")
    print(f"{'component':48s} {'x/step':>6s} {'wall ms':>9s} {'cpu ms':>9s} {'share':>7s} {'GFLOP/s':>8s}")
    for r in rows:
        gf = f"{r['gflops_per_s']:8.1f}" if r["gflops_per_s"] else " " * 8
        print(f"{r['component']:48s} {r['count_per_step']:6d} {r['ms']:9.1f} {r['cpu_ms']:9.1f} {r['share']:7.1%} {gf}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": vars(args), "lanes": n_lanes, "product_step_ms": full * 1e3, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
