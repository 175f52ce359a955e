"""fp32 GEMM after `import tinygpt_mlx` against numpy's own bundled OpenBLAS, in one process, rounds interleaved.

    python benchmarks/blas_check.py [--n 1024] [--rounds 7]

Prints the CPU, both libraries with the kernel each dispatched to (threadpoolctl), GFLOP/s per round and the
median ratio MLX / numpy. The goal is >= 0.8x: MLX's CPU backend as fast as the best BLAS on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics

import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core

import mlx.core as mx  # isort: skip
import numpy as np
from threadpoolctl import threadpool_info

from tinygpt_mlx.bench import median_time
from tinygpt_mlx.envinfo import blas_record, cpu_model


def gflops(run, n: int, repeats: int = 5) -> float:
    """Median throughput of run() (one n x n x n matmul) over repeats, after one warm-up."""
    return 2 * n**3 / median_time(run, repeats, warmup=1)[0] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n = args.n
    a, b = mx.random.normal((n, n), key=mx.random.key(0)), mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a, b)
    an, bn = np.array(a), np.array(b)
    np.testing.assert_allclose(np.array(a @ b), an @ bn, rtol=1e-3, atol=1e-2)
    rows = []
    for _ in range(args.rounds):
        mlx_rate = gflops(lambda: mx.eval(a @ b), n)
        numpy_rate = gflops(lambda: an @ bn, n)
        rows.append((mlx_rate, numpy_rate))
        print(f"mlx {mlx_rate:7.1f}  numpy {numpy_rate:7.1f}  GFLOP/s  ratio {mlx_rate / numpy_rate:.2f}")
    libraries = [{k: lib.get(k) for k in ("filepath", "internal_api", "version", "architecture", "num_threads")}
                 for lib in threadpool_info() if lib.get("user_api") == "blas"]
    summary = {
        "cpu": cpu_model(),
        **blas_record(),
        "libraries": libraries,
        "n": n,
        "mlx_gflops_median": round(statistics.median(r[0] for r in rows), 1),
        "numpy_gflops_median": round(statistics.median(r[1] for r in rows), 1),
        "ratio_median": round(statistics.median(r[0] / r[1] for r in rows), 3),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
