"""One rank of `tinygpt` for the tests, optionally with a fault injected on rank 1 (test-only, never shipped).

TINYGPT_TEST_FAULT = KIND@STEP: while step STEP runs (when the loop draws the batch after it), rank 1
`exit`s at once (os._exit(3), a crash), `hang`s (SIGSTOP: a frozen machine whose sockets stay open), or
`sigterm`s itself (a graceful stop that every rank must follow).
"""

from __future__ import annotations

import os
import signal
import sys

import tinygpt_mlx  # noqa: F401 - the fast BLAS before mlx.core
from tinygpt_mlx.cli import main
from tinygpt_mlx.train import inputs


def inject(kind: str, at: int) -> None:
    """Patch the batch loader so that rank 1 fails during step `at`."""
    real_next = inputs.Batches.next
    calls = {"n": 0}

    def next_batch(self: inputs.Batches):
        calls["n"] += 1
        if calls["n"] == at + 1:  # call 1 is the first batch; call k + 1 happens during step k
            if kind == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGSTOP if kind == "hang" else signal.SIGTERM)
        return real_next(self)

    inputs.Batches.next = next_batch  # type: ignore[method-assign]


if __name__ == "__main__":
    fault = os.environ.get("TINYGPT_TEST_FAULT")
    if fault and os.environ.get("MLX_RANK") == "1":
        kind, step = fault.split("@")
        inject(kind, int(step))
    sys.argv = ["tinygpt", *sys.argv[1:]]
    main()
