"""What each CPU training optimisation gained: the product's TrainStep with them switched on one by one.

Run by hand (not a test):

    python benchmarks/ablate_step.py                  # reference shape, fp32, 7 alternating rounds
    python benchmarks/ablate_step.py --rounds 9 --json ablation.json

Variants, each a full TrainStep (forward + backward + clipping + AdamW) on the same weights and batch:
  baseline          one stream, mx.fast.scaled_dot_product_attention (the step before this work)
  +arith-exp        attention through tinygpt_mlx.cpu_attention (arithmetic exp, own softmax backward)
  +causal-split     ... and the first half of the queries attends to the first half of the keys only
  +2 lanes          ... and each batch split over 2 threads with their own streams (train/lanes.py)
  +4 lanes          ... over 4 threads (what runtime.cpu_threads: 0 picks on 2 cores)
  +C++ kernels      ... and tinygpt_mlx.kernels: fused attention, layer norm and GELU (the product now)
The variants before the last run with TINYGPT_KERNELS=0, as the product does where the kernels cannot build.
Each variant lives in its own worker process (in one process, the lane variants' threads and BLAS
thread switching slowed the single-stream variants by 30-45%), traced under its own settings; the
parent then steps the variants in turn, round after round, so machine load hits all alike. Medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

# isort: off
import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core binds the slow one
import mlx.core as mx
# isort: on

from shapes import product_step, shape_parser

from tinygpt_mlx import cpu_attention
from tinygpt_mlx.envinfo import environment_record

VARIANTS = {  # name: (runtime.cpu_threads, arithmetic-exp attention, causal split)
    "baseline": (1, False, False),
    "+arith-exp": (1, True, False),
    "+causal-split": (1, True, True),
    "+2 lanes": (2, True, True),
    "+4 lanes": (4, True, True),
    "+C++ kernels": (4, True, True),
}


@contextlib.contextmanager
def attention_switches(arith: bool, split: bool):
    active, min_split = cpu_attention.active, cpu_attention.MIN_SPLIT
    if not arith:
        cpu_attention.active = lambda: False
    if not split:
        cpu_attention.MIN_SPLIT = 1 << 30
    try:
        yield
    finally:
        cpu_attention.active, cpu_attention.MIN_SPLIT = active, min_split


def build(args: argparse.Namespace, threads: int, arith: bool, split: bool, x: mx.array, y: mx.array):
    _, _, step = product_step(args, args.batch, threads)
    with attention_switches(arith, split):
        for _ in range(2):  # trace, then one warm step
            loss, _, _ = step(x, y)
            mx.eval(step.state, loss)
    return step


def worker(args: argparse.Namespace) -> None:
    """One variant: answers each "step" line on stdin with the step's wall time and loss."""
    x = mx.random.randint(0, args.vocab, (args.batch, args.seq), key=mx.random.key(1))
    y = mx.roll(x, -1, axis=1)
    mx.eval(x, y)
    step = build(args, *VARIANTS[args.worker], x, y)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            return
        start = time.perf_counter()
        loss, _, _ = step(x, y)
        mx.eval(step.state, loss)
        print(json.dumps({"seconds": time.perf_counter() - start, "loss": loss.item()}), flush=True)


def main() -> None:
    p = shape_parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    shape = [f"--d-model={args.d_model}", f"--n-layers={args.n_layers}", f"--n-heads={args.n_heads}",
             f"--seq={args.seq}", f"--batch={args.batch}", f"--vocab={args.vocab}"]
    procs = {}
    for name in VARIANTS:  # one at a time: tracing is the busiest part
        env = {**os.environ, "TINYGPT_KERNELS": "1" if name == "+C++ kernels" else "0"}
        procs[name] = subprocess.Popen([sys.executable, __file__, "--worker", name, *shape], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env=env)
        assert procs[name].stdout.readline().strip() == "ready"
    times: dict[str, list[float]] = {name: [] for name in procs}
    losses: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, proc in procs.items():
            proc.stdin.write("step\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            times[name].append(answer["seconds"])
            losses[name] = answer["loss"]
    for proc in procs.values():
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait()
    tokens = args.batch * args.seq
    base = statistics.median(times["baseline"])
    print(f"d{args.d_model}/L{args.n_layers}/H{args.n_heads} seq {args.seq} batch {args.batch} vocab {args.vocab} "
          f"fp32; median of {args.rounds} alternating rounds")
    print(f"{'variant':16s} {'step ms':>9s} {'tokens/s':>9s} {'vs baseline':>11s}  loss after {args.rounds + 2} steps")
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"variant": name, "step_ms": med * 1e3, "tokens_per_s": tokens / med, "speedup": base / med,
                     "loss": losses[name]})
        print(f"{name:16s} {med * 1e3:9.0f} {tokens / med:9.0f} {base / med:10.2f}x  {losses[name]:.6f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment_record(), "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
