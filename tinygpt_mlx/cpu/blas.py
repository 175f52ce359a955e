"""Load a fast BLAS on Linux before mlx.core, because the mlx-cpu wheel links a slow reference BLAS."""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import warnings

# Debian/Ubuntu (libopenblas0-pthread), Fedora (openblas), conda, and the pip `mkl` wheel, in that order.
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libblis.so.4",
)
FIX_HINT = (
    "install OpenBLAS (Debian/Ubuntu: `sudo apt-get install libopenblas0-pthread`, Fedora: "
    "`sudo dnf install openblas`) or set TINYGPT_BLAS=/path/to/libopenblas.so"
)

_state: dict[str, str | None] = {"path": None, "status": "not-loaded"}
_handles: dict[str, ctypes.CDLL] = {}


def _candidate_paths() -> list[str]:
    paths = []
    override = os.environ.get("TINYGPT_BLAS")
    if override:
        paths.append(override)
    paths.extend(_CANDIDATES)
    for prefix in {sys.prefix, os.environ.get("CONDA_PREFIX", "")} - {""}:
        paths.extend(sorted(glob.glob(os.path.join(prefix, "lib", "libopenblas*.so*"))))
        paths.extend(sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*"))))
    return paths


def _exports_cblas(lib: ctypes.CDLL) -> bool:
    try:
        lib.cblas_sgemm  # noqa: B018 - attribute lookup is the check
    except AttributeError:
        return False
    return True


def ensure_fast_blas() -> str:
    """Load a fast cblas into the global symbol scope (Linux only) and return a short status."""
    if _state["status"] != "not-loaded":
        return _state["status"]
    if not sys.platform.startswith("linux") or os.environ.get("TINYGPT_BLAS") == "none":
        _state["status"] = "native" if sys.platform == "darwin" else "disabled"
        return _state["status"]
    if "mlx.core" in sys.modules:
        # Too late to interpose: mlx has already bound its bundled BLAS.
        _state["status"] = "too-late"
        return _state["status"]
    for path in _candidate_paths():
        if not os.path.exists(path):
            continue
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        if _exports_cblas(lib):
            _state.update(path=os.path.realpath(path), status="loaded")
            return "loaded"
    _state["status"] = "missing"
    if not os.environ.get("TINYGPT_QUIET_BLAS"):
        warnings.warn(
            "tinygpt_mlx: no fast BLAS found; MLX on this CPU will use its reference BLAS "
            f"(about 30x slower matmuls). Fix: {FIX_HINT}.",
            RuntimeWarning,
            stacklevel=2,
        )
    return "missing"


def set_threads(n: int) -> int | None:
    """Set the loaded OpenBLAS's thread count and return the previous one (None: not OpenBLAS, untouched)."""
    if _state["status"] != "loaded":
        return None
    path = _state["path"]
    if path not in _handles:
        _handles[path] = ctypes.CDLL(path)
    lib = _handles[path]
    try:
        get, put = lib.openblas_get_num_threads, lib.openblas_set_num_threads
    except AttributeError:  # MKL or BLIS: they size their own pools
        return None
    previous = int(get())
    if previous != n:
        put(int(n))
    return previous


def blas_description() -> str:
    """Human-readable name of the BLAS that MLX's CPU backend uses in this process."""
    status = _state["status"]
    if status == "loaded":
        return f"OpenBLAS/MKL via {_state['path']}"
    if status == "native":
        return "Apple Accelerate"
    if status == "disabled":
        return "bundled reference BLAS (TINYGPT_BLAS=none)"
    if status == "too-late":
        return "bundled reference BLAS (mlx.core was imported before tinygpt_mlx)"
    return "bundled reference BLAS (slow)"
