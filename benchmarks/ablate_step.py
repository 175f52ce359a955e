"""What each CPU training optimisation gains: the product's step with them switched on one by one.

Run by hand (not a test):

    python benchmarks/ablate_step.py                  # reference shape, fp32, 7 alternating rounds
    python benchmarks/ablate_step.py --rounds 9 --json ablation.json

Variants, each a full step (forward + backward + clipping + AdamW) on the same weights and batch:
  plain             train/step.py's TrainStep on the plain model, one stream (what a GPU runs)
  +arith-GELU       ... through cpu.accelerate with one lane and TINYGPT_KERNELS=0: the CPU modules'
                    fallback GELU (cpu/gelu.py), what runs where the kernels cannot build
  +2 lanes          ... and each batch split over 2 threads with their own streams (cpu/lanes.py)
  +4 lanes          ... over 4 threads (what runtime.cpu_threads: 0 picks on 2 cores)
  +C++ kernels      ... and cpu/kernels: fused attention, layer norm and GELU (the product)
Each variant lives in its own worker process (in one process, the lane variants' threads and BLAS
thread switching slow the single-stream variants by 30-45%), traced under its own settings; the
parent then steps the variants in turn, round after round, so machine load hits all alike. Medians.
"""

from __future__ import annotations

import argparse
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

from tinygpt_mlx.envinfo import environment_record

VARIANTS = {  # name: (through cpu.accelerate, runtime.cpu_threads, C++ kernels)
    "plain": (False, 1, False),
    "+arith-GELU": (True, 1, False),
    "+2 lanes": (True, 2, False),
    "+4 lanes": (True, 4, False),
    "+C++ kernels": (True, 4, True),
}


def build(args: argparse.Namespace, accelerated: bool, threads: int, x: mx.array, y: mx.array):
    _, _, step = product_step(args, args.batch, threads, accelerated=accelerated)
    for _ in range(2):  # trace, then one warm step
        loss, _, _ = step(x, y)
        mx.eval(step.state, loss)
    return step


def worker(args: argparse.Namespace) -> None:
    """One variant: answers each "step" line on stdin with the step's wall time and loss."""
    x = mx.random.randint(0, args.vocab, (args.batch, args.seq), key=mx.random.key(1))
    y = mx.roll(x, -1, axis=1)
    mx.eval(x, y)
    accelerated, threads, _ = VARIANTS[args.worker]
    step = build(args, accelerated, threads, x, y)
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
        env = {**os.environ, "TINYGPT_KERNELS": "1" if VARIANTS[name][2] else "0"}
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
    base = statistics.median(times["plain"])
    print(f"d{args.d_model}/L{args.n_layers}/H{args.n_heads} seq {args.seq} batch {args.batch} vocab {args.vocab} "
          f"fp32; median of {args.rounds} alternating rounds")
    print(f"{'variant':16s} {'step ms':>9s} {'tokens/s':>9s} {'vs plain':>11s}  loss after {args.rounds + 2} steps")
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
