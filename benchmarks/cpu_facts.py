"""The facts about MLX's CPU backend that shaped the CPU training step (benchmarks/README.md, "Machine").

Run by hand (not a test):  python benchmarks/cpu_facts.py [--repeats 9]

1. Transcendentals are scalar loops: mx.exp and mx.softmax on a [16, 4, 256, 256] score tensor (and
   torch.exp in a child process that never loads tinygpt_mlx, when torch is installed); GELU forward +
   backward on a [4096, 1024] activation, nn.gelu_approx (tanh) against cpu/gelu.py's arithmetic form.
2. Scaling over two threads, each with its own stream: compute-bound (a chain of exp) and memory-bound
   (a chain of adds over 16 MB arrays), against the same work on one thread.
3. fp32 GEMM (n = 2048) with OpenBLAS at 1 and 2 threads.
4. A training-shaped graph (TinyGPT forward + backward at the reference shape, two halves of the batch):
   both halves on two streams in one mx.eval, against two threads each evaluating its own half.
Medians of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

# isort: off
import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core binds the slow one
import mlx.core as mx
# isort: on

import mlx.nn as nn

from tinygpt_mlx.bench import median_time
from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.cpu import blas
from tinygpt_mlx.cpu.gelu import gelu_arith
from tinygpt_mlx.envinfo import measure_gemm_gflops
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.model import TinyGPT

TORCH_EXP = """
import time, statistics, torch
torch.set_num_threads(2)
s = torch.randn(16, 4, 256, 256) * 10
s = s - s.amax(-1, keepdim=True)
ts = []
for _ in range({repeats} + 2):
    t = time.perf_counter(); torch.exp(s); ts.append(time.perf_counter() - t)
print(statistics.median(ts[2:]) * 1e3)
"""


def timed(fn, repeats: int) -> float:
    """Median milliseconds of fn() after two warm-up calls (the bench's own timer)."""
    return median_time(fn, repeats, warmup=2)[0] * 1e3


def on_two_threads(make_work) -> None:
    """Run make_work(i) for i = 0, 1 on two threads, each evaluating on its own new stream."""
    def body(i: int) -> None:
        with mx.stream(mx.new_stream(mx.cpu)):
            mx.eval(make_work(i))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    n = args.repeats

    print("1. exp on [16, 4, 256, 256] (4.2 M elements)")
    scores = mx.random.normal((16, 4, 256, 256)) * 10
    scores = scores - scores.max(axis=-1, keepdims=True)
    mx.eval(scores)
    print(f"   mx.exp                          {timed(lambda: mx.eval(mx.exp(scores)), n):7.1f} ms")
    print(f"   mx.softmax                      {timed(lambda: mx.eval(mx.softmax(scores, axis=-1)), n):7.1f} ms")
    try:
        out = subprocess.run([sys.executable, "-c", TORCH_EXP.format(repeats=n)], capture_output=True, text=True,
                             timeout=300, check=True).stdout
        print(f"   torch.exp (2 threads)           {float(out):7.1f} ms")
    except (subprocess.SubprocessError, ValueError):
        print("   torch.exp                       (torch not installed)")
    acts, grads_out = mx.random.normal((4096, 1024)) * 3, mx.random.normal((4096, 1024))
    mx.eval(acts, grads_out)
    for name, gelu in (("nn.gelu_approx", nn.gelu_approx), ("cpu.gelu.gelu_arith", gelu_arith)):
        both = mx.compile(mx.value_and_grad(lambda x, gelu=gelu: (gelu(x) * grads_out).sum()))
        print(f"   GELU fwd+bwd, {name:19s} {timed(lambda both=both: mx.eval(both(acts)), n):7.1f} ms")

    print("2. two threads with their own streams vs one thread, same total work")
    inputs = [mx.random.normal((16, 4, 256, 256)) for _ in range(2)]
    mx.eval(inputs)

    def exp_chain(i: int) -> mx.array:
        a = inputs[i]
        for _ in range(3):
            a = mx.exp(-mx.abs(a))
        return a

    def add_chain(i: int) -> mx.array:
        a = inputs[i]
        for _ in range(20):
            a = a + 1.0
        return a

    for name, work in (("compute-bound (exp)", exp_chain), ("memory-bound (add)", add_chain)):
        serial = timed(lambda work=work: [mx.eval(work(i)) for i in range(2)], n)
        parallel = timed(lambda work=work: on_two_threads(work), n)
        print(f"   {name:22s} one thread {serial:7.1f} ms, two threads {parallel:7.1f} ms: {serial / parallel:.2f}x")

    print("3. fp32 GEMM n = 2048")
    for threads in (1, 2):
        previous = blas.set_threads(threads)
        gflops = measure_gemm_gflops(n=2048, repeats=5)
        if previous is not None:
            blas.set_threads(previous)
        print(f"   OpenBLAS {threads} thread(s): {gflops:6.1f} GFLOP/s"
              + ("" if previous is not None else " (thread count not settable: not OpenBLAS)"))

    print("4. TinyGPT d256/L4/H4 forward + backward, batch 16 at seq 256 as two halves")
    mx.random.seed(0)
    model = TinyGPT(ModelConfig(d_model=256, n_layers=4, n_heads=4, max_seq_len=256), 65)
    params = model.trainable_parameters()
    x = mx.random.randint(0, 65, (16, 256))
    y = mx.roll(x, -1, axis=1)
    mx.eval(x, y, params)
    halves = [(x[:8], y[:8]), (x[8:], y[8:])]
    mx.eval(halves)

    def loss(p, xs, ys):
        model.update(p)
        return cross_entropy_loss(model(xs), ys)

    grad = mx.value_and_grad(loss)
    streams = [mx.new_stream(mx.cpu) for _ in range(2)]

    def one_eval_two_streams():
        outs = []
        for stream, (xs, ys) in zip(streams, halves, strict=True):
            with mx.stream(stream):
                outs.append(grad(params, xs, ys))
        mx.eval(outs)
        model.update(params)

    lock = threading.Lock()

    def half(i: int):
        with lock:  # graph building mutates the shared model, as in cpu/lanes.py
            out = grad(params, *halves[i])
            model.update(params)
        return out

    previous = blas.set_threads(1)
    try:
        for name, fn in (("one mx.eval, two streams", one_eval_two_streams),
                         ("two threads, own streams", lambda: on_two_threads(half))):
            fn()  # trace and warm up
            walls, cpus = [], []
            for _ in range(max(3, n // 3)):
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            print(f"   {name:26s} wall {statistics.median(walls) * 1e3:6.0f} ms, "
                  f"CPU {statistics.median(cpus) * 1e3:6.0f} ms (1-thread BLAS)")
    finally:
        if previous is not None:
            blas.set_threads(previous)


if __name__ == "__main__":
    main()
