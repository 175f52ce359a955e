"""TinyGPT-MLX training step vs the same model in PyTorch eager, in one process, alternating.

Run by hand (not a test):

    python benchmarks/compare_torch.py                        # reference shape, fp32
    python benchmarks/compare_torch.py --rounds 9 --threads 2 --json torch_vs_mlx.json

Both sides run forward + backward + gradient clipping (1.0) + AdamW with decay on matrices only, on the
same shapes (reference: d_model 256 / 4 layers / 4 heads / seq 256 / batch 16 / vocab 65). MLX uses the
product's own step as `tinygpt train` builds it (make_train_step + cpu.accelerate); PyTorch a plain GPT-2 module (below) with
F.scaled_dot_product_attention(is_causal=True) and tanh GELU, eager, `torch.set_num_threads(threads)`.
Steps alternate MLX, torch, MLX, ... so machine load hits both alike; warm-up is excluded, medians
reported, with the process CPU time of each step beside the wall time (steadier on a shared machine).

PyTorch runs in a worker process that never loads tinygpt_mlx: the fast BLAS that tinygpt_mlx loads
with RTLD_GLOBAL interposes PyTorch's BLAS symbols, and OpenBLAS's own threads inside PyTorch's OpenMP
regions made PyTorch 5-10x slower in a shared process (measured: 2-4 s -> 10-28 s per step). The parent
tells the worker when to step, so the two still alternate step by step.

Peak memory: PyTorch has no CPU allocator statistics, so both sides report the same thing: peak RSS
growth of their process over its RSS after imports and data set-up (ru_maxrss). MLX's own allocator
peak (mx.get_peak_memory) is printed too.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from shapes import product_step, shape_parser


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ----------------------------------------------------------------------------------------------- torch
def build_torch(args: argparse.Namespace):
    """A plain PyTorch GPT-2 with TinyGPT's shapes and init, and its AdamW (decay on matrices only)."""
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    class Block(tnn.Module):
        def __init__(self, d: int, h: int):
            super().__init__()
            self.h = h
            self.ln_1, self.ln_2 = tnn.LayerNorm(d), tnn.LayerNorm(d)
            self.c_attn, self.attn_proj = tnn.Linear(d, 3 * d), tnn.Linear(d, d)
            self.c_fc, self.mlp_proj = tnn.Linear(d, 4 * d), tnn.Linear(4 * d, d)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (a.view(B, T, self.h, C // self.h).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            d = args.d_model
            self.wte, self.wpe = tnn.Embedding(args.vocab, d), tnn.Embedding(args.seq, d)
            self.h = tnn.ModuleList([Block(d, args.n_heads) for _ in range(args.n_layers)])
            self.ln_f = tnn.LayerNorm(d)
            for name, p in self.named_parameters():
                if p.ndim == 2:
                    tnn.init.normal_(p, std=0.02 / ((2 * args.n_layers) ** 0.5 if name.endswith("proj.weight") else 1))
                elif name.endswith("bias"):
                    tnn.init.zeros_(p)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T  # tied head
            return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))

    model = GPT()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else None

    def step(x, y):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def torch_batch(args: argparse.Namespace, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    return x, torch.roll(x, -1, dims=1)


# ------------------------------------------------------------------------------------------------- mlx
def build_mlx(args: argparse.Namespace):
    # tinygpt_mlx first: it loads the fast BLAS, which only works before mlx.core is imported. Never in the
    # torch worker: the globally loaded OpenBLAS slows torch's CPU kernels there.
    import tinygpt_mlx  # noqa: F401, I001
    import mlx.core as mx

    _, model, train_step = product_step(args, args.batch, cpu_threads=0, precision=args.dtype)

    def step(x, y):
        loss, _, _ = train_step(x, y)
        mx.eval(train_step.state, loss)
        return loss.item()

    return model, step


def mlx_batch(args: argparse.Namespace, seed: int):
    import mlx.core as mx

    x = mx.random.randint(0, args.vocab, (args.batch, args.seq), key=mx.random.key(seed))
    return x, mx.roll(x, -1, axis=1)


# --------------------------------------------------------------------------------------------- runners
def timed(step, x, y) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step(x, y)
    return time.perf_counter() - wall, time.process_time() - cpu


def torch_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: one line per command on stdin ("step" or "mem"), one answer line out."""
    import torch

    torch.set_num_threads(args.threads)
    x, y = torch_batch(args, 0)
    base = rss_mb()
    _, step = build_torch(args)
    print(json.dumps({"torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            wall, cpu = timed(step, x, y)
            print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
        elif line.strip() == "mem":
            print(json.dumps({"peak_rss_growth_mb": peak_rss_mb() - base}), flush=True)
        else:
            return


class TorchSide:
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen([sys.executable, __file__, "--torch-worker", *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.version = self.ask(None)["torch"]

    def ask(self, command: str | None) -> dict:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def step(self) -> tuple[float, float]:
        answer = self.ask("step")
        return answer["wall"], answer["cpu"]

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait()


def main() -> None:
    p = shape_parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_worker:
        torch_worker(args)
        return

    import tinygpt_mlx  # noqa: F401, I001 - the fast BLAS must load before mlx.core (see build_mlx)
    import mlx.core as mx

    tokens = args.batch * args.seq
    torch_side = TorchSide([a for a in sys.argv[1:] if a != "--torch-worker"])
    x, y = mlx_batch(args, 0)
    mx.eval(x, y)
    base = rss_mb()
    _, mlx_step = build_mlx(args)
    sides = {"mlx": lambda: timed(mlx_step, x, y), "torch": torch_side.step}
    for run in sides.values():
        for _ in range(args.warmup):
            run()
    walls = {k: [] for k in sides}
    cpus = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, run in sides.items():
            wall, cpu = run()
            walls[name].append(wall)
            cpus[name].append(cpu)

    result = {"shape": {k: v for k, v in vars(args).items() if k != "torch_worker"}, "tokens_per_step": tokens,
              "torch_version": torch_side.version}
    for name in sides:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        result[name] = {"tokens_per_s": tokens / wall, "step_s_median": wall, "step_s_min": min(walls[name]),
                        "cpu_s_median": cpu}
    result["ratio_mlx_over_torch"] = result["mlx"]["tokens_per_s"] / result["torch"]["tokens_per_s"]
    result["ratio_cpu_time_torch_over_mlx"] = result["torch"]["cpu_s_median"] / result["mlx"]["cpu_s_median"]
    result["mlx"]["peak_rss_growth_mb"] = peak_rss_mb() - base
    result["mlx"]["mlx_peak_memory_mb"] = mx.get_peak_memory() / 2**20
    result["torch"].update(torch_side.ask("mem"))
    torch_side.close()
    result["memory_ratio_mlx_over_torch"] = result["mlx"]["peak_rss_growth_mb"] / result["torch"]["peak_rss_growth_mb"]

    print(f"shape d{args.d_model}/L{args.n_layers}/H{args.n_heads} seq {args.seq} batch {args.batch} "
          f"vocab {args.vocab} {args.dtype}; torch {torch_side.version} threads {args.threads}; "
          f"median of {args.rounds} alternating rounds")
    for name in sides:
        r = result[name]
        print(f"  {name:6s} {r['tokens_per_s']:8.0f} tokens/s  step {r['step_s_median'] * 1e3:7.0f} ms "
              f"(min {r['step_s_min'] * 1e3:.0f})  cpu {r['cpu_s_median'] * 1e3:7.0f} ms  "
              f"peak RSS +{r['peak_rss_growth_mb']:.0f} MB")
    print(f"  ratio MLX/torch tokens/s: {result['ratio_mlx_over_torch']:.2f}  "
          f"(CPU-time ratio torch/MLX: {result['ratio_cpu_time_torch_over_mlx']:.2f})")
    print(f"  peak memory MLX/torch: {result['memory_ratio_mlx_over_torch']:.2f} "
          f"(MLX allocator peak {result['mlx']['mlx_peak_memory_mb']:.0f} MB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
