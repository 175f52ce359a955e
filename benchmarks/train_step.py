"""Training-step throughput: compiled vs uncompiled step, plus a rough forward/backward/optimizer split.

Run by hand (not a test):  python benchmarks/train_step.py [--repeats 5] [--precision float32]
Reference shape: d_model 256 / 4 layers / 4 heads / seq 256 / batch 16 / vocab 65 / AdamW. Both steps are built
as `tinygpt train` builds them (make_train_step + cpu.accelerate), with runtime.compile on and off.
Compiled and uncompiled steps alternate within one process so machine load hits both alike;
warm-up steps (which include tracing and compilation) are excluded and the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

# isort: off
import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core binds the slow one
import mlx.core as mx
import mlx.nn as nn
# isort: on

from shapes import shape_parser

from tinygpt_mlx.config import Config, ModelConfig
from tinygpt_mlx.cpu import accelerate
from tinygpt_mlx.cpu.step import LaneStep
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.step import TrainStep, make_train_step


def make_config(args: argparse.Namespace, compile_: bool) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, max_seq_len=args.seq)
    cfg.runtime.compile = compile_
    cfg.runtime.precision = args.precision
    cfg.runtime.grad_accum_steps = args.accum
    cfg.data.batch_size = args.batch
    return cfg


def timed(fn: Callable[[], None]) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def cpu_timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall and process CPU seconds; on a shared, loaded machine the CPU time is the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = shape_parser(__doc__.splitlines()[0])
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    args = p.parse_args()

    tokens = args.accum * args.batch * args.seq
    x = mx.random.randint(0, args.vocab, (args.accum, args.batch, args.seq))
    y = mx.random.randint(0, args.vocab, (args.accum, args.batch, args.seq))
    steps, peaks = {}, {}
    for name, compile_ in (("compiled", True), ("uncompiled", False)):
        cfg = make_config(args, compile_)
        mx.random.seed(0)
        model = TinyGPT(cfg.model, args.vocab)
        _, steps[name] = accelerate(model, make_train_step(model, build_optimizer(cfg, total_steps=1000), cfg), cfg)

    def run_step(name: str) -> None:
        step = steps[name]
        loss, grad_norm, ok = step(x, y)
        mx.eval(step.state, loss, grad_norm, ok)

    for name in steps:
        for _ in range(args.warmup):
            run_step(name)
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name in steps:
            mx.reset_peak_memory()
            wall, used = cpu_timed(lambda name=name: run_step(name))
            times[name].append(wall)
            cpu[name].append(used)
            peaks[name] = max(peaks.get(name, 0), mx.get_peak_memory())

    print(f"shape d{args.d_model} L{args.n_layers} H{args.n_heads} seq {args.seq} batch {args.batch}x{args.accum} "
          f"vocab {args.vocab} {args.precision}; {tokens} tokens/step, median of {args.repeats}")
    tps = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        tps[name] = tokens / med
        print(f"  {name:<10} {med * 1e3:8.1f} ms/step  {tps[name]:8.0f} tokens/s  peak {peaks[name] / 2**20:7.1f} MiB"
              f"  cpu {statistics.median(cpu[name]):5.2f} s/step  (all: {', '.join(f'{t * 1e3:.0f}' for t in ts)} ms)")
    cpu_ratio = statistics.median(cpu["uncompiled"]) / statistics.median(cpu["compiled"])
    print(f"  compiled / uncompiled = {tps['compiled'] / tps['uncompiled']:.2f}x wall, {cpu_ratio:.2f}x cpu time")
    if args.profile:
        profile(args, x, y, steps["compiled"])


def profile(args: argparse.Namespace, x: mx.array, y: mx.array, step: TrainStep | LaneStep) -> None:
    """Rough split of a compiled step: forward alone, forward + backward, and the full update."""
    model = step.model

    def loss_fn(params: dict) -> mx.array:
        model.update(params)
        return cross_entropy_loss(model(x[0]), y[0])

    forward = mx.compile(lambda params: loss_fn(params))
    backward = mx.compile(mx.value_and_grad(loss_fn))
    params = model.trainable_parameters()
    parts = {
        "forward": lambda: mx.eval(forward(params)),
        "forward+backward": lambda: mx.eval(backward(params)),
        "full step": lambda: mx.eval(step.state, *step(x, y)),
    }
    print("  profile (compiled, one micro-batch for the first two, median of 3 after one warm-up):")
    for name, fn in parts.items():
        times = []
        for _ in range(4):
            times.append(timed(fn))
            if name != "full step":  # loss_fn leaves its traced arrays in the model; put the real ones back
                model.update(params)
        print(f"    {name:<17} {statistics.median(times[1:]) * 1e3:8.1f} ms")
    n_params = sum(v.size for _, v in nn.utils.tree_flatten(params))
    print(f"    ({n_params / 1e6:.2f} M parameters)")


if __name__ == "__main__":
    main()
