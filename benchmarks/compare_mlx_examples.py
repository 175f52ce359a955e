"""TinyGPT-MLX's training step vs the "obvious" compiled MLX loop a user would write, same run.

Run by hand (not a test):

    python benchmarks/compare_mlx_examples.py                 # reference shape, fp32
    python benchmarks/compare_mlx_examples.py --rounds 9 --json plain_vs_tinygpt.json

The plain loop is the mlx-examples / mlx-lm recipe: a GPT-2 written with mlx.nn (nn.MultiHeadAttention-free,
mx.fast.scaled_dot_product_attention, nn.gelu_approx, nn.LayerNorm), `nn.value_and_grad`, `optim.AdamW`
and `@partial(mx.compile, inputs=state, outputs=state)` around forward + backward + update. TinyGPT's side is
the product's step as `tinygpt train` builds it (make_train_step + cpu.accelerate; it also clips
gradients, masks weight decay and guards non-finite steps).
The two alternate step by step; medians of wall and process CPU time; MLX allocator peak of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

# isort: off
import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core binds the slow one
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
# isort: on

from shapes import product_step, shape_parser


class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def __call__(self, x):
        B, T, C = x.shape
        q, k, v = mx.split(self.c_attn(self.ln_1(x)), 3, axis=-1)
        q, k, v = (a.reshape(B, T, self.heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=(C // self.heads) ** -0.5, mask="causal")
        x = x + self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, C))
        return x + self.mlp_proj(nn.gelu_approx(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, seq: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.h = [PlainBlock(d, heads) for _ in range(layers)]
        self.ln_f = nn.LayerNorm(d)

    def __call__(self, idx):
        x = self.wte(idx) + self.wpe(mx.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.wte.as_linear(self.ln_f(x))


def plain_step(args: argparse.Namespace):
    model = PlainGPT(args.vocab, args.d_model, args.n_layers, args.n_heads, args.seq)
    optimizer = optim.AdamW(learning_rate=3e-4, weight_decay=0.1)

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(x, y):
        loss, grads = loss_and_grad(model, x, y)
        optimizer.update(model, grads)
        return loss

    def run(x, y):
        mx.eval(step(x, y), state)

    return run


def tinygpt_step(args: argparse.Namespace):
    _, _, step = product_step(args, args.batch, cpu_threads=0)

    def run(x, y):
        loss, _, _ = step(x, y)
        mx.eval(loss, step.state)

    return run


def main() -> None:
    p = shape_parser(__doc__.splitlines()[0])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    mx.random.seed(0)
    x = mx.random.randint(0, args.vocab, (args.batch, args.seq), key=mx.random.key(1))
    y = mx.roll(x, -1, axis=1)
    mx.eval(x, y)
    sides = {"tinygpt": tinygpt_step(args), "plain": plain_step(args)}
    for run in sides.values():
        for _ in range(args.warmup):
            run(x, y)
    walls, cpus, peaks = {k: [] for k in sides}, {k: [] for k in sides}, {}
    for _ in range(args.rounds):
        for name, run in sides.items():
            mx.clear_cache()
            mx.reset_peak_memory()
            wall, cpu = time.perf_counter(), time.process_time()
            run(x, y)
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
            peaks[name] = mx.get_peak_memory() / 2**20
    tokens = args.batch * args.seq
    result = {"shape": vars(args)}
    for name in sides:
        wall = statistics.median(walls[name])
        result[name] = {"tokens_per_s": tokens / wall, "step_ms": wall * 1e3, "cpu_ms": statistics.median(cpus[name]) * 1e3,
                        "peak_memory_mb": peaks[name]}
    result["ratio_tinygpt_over_plain"] = result["tinygpt"]["tokens_per_s"] / result["plain"]["tokens_per_s"]
    print(f"d{args.d_model}/L{args.n_layers}/H{args.n_heads} seq {args.seq} batch {args.batch} vocab {args.vocab} fp32; "
          f"median of {args.rounds} alternating rounds")
    for name in sides:
        r = result[name]
        print(f"  {name:8s} {r['tokens_per_s']:8.0f} tokens/s  step {r['step_ms']:7.0f} ms  cpu {r['cpu_ms']:7.0f} ms  "
              f"peak {r['peak_memory_mb']:.0f} MB")
    print(f"  ratio tinygpt/plain: {result['ratio_tinygpt_over_plain']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
