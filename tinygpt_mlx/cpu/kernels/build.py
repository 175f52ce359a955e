"""Compile the C++ kernels in csrc/ against the installed MLX into a per-machine cache, once.

Why at first use and not at `pip install`: the install then never fails for want of a compiler (the
kernels are an optimisation with a pure-MLX fallback), and the code is built for the CPU it runs on
(-march=native), which a wheel cannot be. The cache key covers the sources, MLX, nanobind, Python, the
compiler, its flags and the CPU, so any change rebuilds; a file lock keeps processes of one `mlx.launch` from
building the same library at once.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

from tinygpt_mlx.cpu.cache import cache_dir, locked

SOURCE_DIR = Path(__file__).parent / "csrc"
MODULE_NAME = "_tinygpt_kernels"
# A build takes 10-20 s on an idle 2-core machine; a compiler still running after this is stuck.
BUILD_TIMEOUT_S = 600


class BuildError(RuntimeError):
    """The kernels could not be compiled; the message says why in one line."""


def cache_root() -> Path:
    """Where built kernels live: $TINYGPT_KERNEL_CACHE, else the user's cache directory."""
    return cache_dir("kernels", "TINYGPT_KERNEL_CACHE")


def compiler() -> str:
    """The C++ compiler: $CXX, else the first of c++, g++, clang++ on PATH."""
    for name in filter(None, [os.environ.get("CXX"), "c++", "g++", "clang++"]):
        path = shutil.which(name)
        if path:
            return path
    raise BuildError("no C++ compiler found (install g++ or clang++, or set CXX)")


def _cpu_signature() -> str:
    if sys.platform.startswith("linux"):
        try:
            lines = Path("/proc/cpuinfo").read_text().splitlines()
        except OSError:
            return platform.processor()
        wanted = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(dict.fromkeys(wanted))  # one copy per distinct line, not one per core
    return platform.processor()


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise BuildError(f"{cxx} --version failed: {err}") from err


def _nanobind() -> ModuleType:
    try:
        import nanobind
    except ImportError:  # a Linux-only dependency: elsewhere the kernels are opt-in
        raise BuildError("nanobind is not installed (pip install nanobind, the version MLX was built with)") from None
    return nanobind


def _paths() -> dict[str, str]:
    import mlx

    mlx_dir = Path(mlx.__path__[0])
    return {
        "mlx_include": str(mlx_dir / "include"),
        "mlx_lib": str(mlx_dir / "lib"),
        "nanobind": str(Path(_nanobind().__file__).parent),
        "python_include": sysconfig.get_paths()["include"],
    }


def build_key(cxx: str) -> str:
    """Hash of everything the built library depends on."""
    from importlib import metadata

    digest = hashlib.sha256()
    # This file too: it holds the compiler flags.
    for source in [*sorted(SOURCE_DIR.iterdir()), Path(__file__)]:
        digest.update(source.name.encode() + source.read_bytes())
    for part in (metadata.version("mlx"), _nanobind().__version__, sys.version, platform.machine(),
                 _compiler_version(cxx), _cpu_signature()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _commands(cxx: str, paths: dict[str, str], objects: Path, output: Path) -> tuple[list[list[str]], list[str]]:
    nb = Path(paths["nanobind"])
    common = ["-std=c++20", "-fopenmp-simd", "-fPIC", "-fvisibility=hidden", "-DNDEBUG", "-DNB_DOMAIN=mlx",
              f"-I{nb / 'include'}", f"-I{nb / 'ext' / 'robin_map' / 'include'}",
              f"-I{paths['python_include']}", f"-I{paths['mlx_include']}"]
    # Apple silicon's baseline already has NEON; on x86 the host's AVX2/AVX-512 is what the loops need.
    arch = ["-march=native"] if platform.machine() in ("x86_64", "AMD64") else []
    # The kernels at -O3 for this CPU; the Python glue (bindings, nanobind itself) needs no more than -O2.
    # No FP traps or errno: without these GCC will not if-convert the clamps, and the loops stay scalar.
    fast = ["-O3", "-fno-math-errno", "-fno-trapping-math", *arch]
    jobs = [(source, fast if source.name != "bindings.cpp" else ["-O2"])
            for source in sorted(SOURCE_DIR.glob("*.cpp"))]
    jobs.append((nb / "src" / "nb_combined.cpp", ["-O2"]))
    compiles = [[cxx, *flags, *common, "-c", str(source), "-o", str(objects / (source.stem + ".o"))]
                for source, flags in jobs]
    link = [cxx, "-shared", "-o", str(output), *(cmd[-1] for cmd in compiles),
            f"-L{paths['mlx_lib']}", "-lmlx", f"-Wl,-rpath,{paths['mlx_lib']}"]
    if sys.platform == "darwin":
        # Python's symbols come from the interpreter at import time; cblas from Accelerate.
        link += ["-undefined", "dynamic_lookup", "-framework", "Accelerate"]
    return compiles, link


def _run_all(commands: list[list[str]], log: Path, what: str) -> None:
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in commands]
    try:
        outputs = [proc.communicate(timeout=BUILD_TIMEOUT_S)[0] for proc in procs]
    except subprocess.TimeoutExpired as err:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise BuildError(f"{what} took more than {BUILD_TIMEOUT_S} s: {Path(str(err.cmd[0])).name} "
                         "did not finish") from None
    with open(log, "a") as handle:
        for cmd, out in zip(commands, outputs, strict=True):
            handle.write(" ".join(cmd) + "\n" + out + "\n")
    for cmd, proc, out in zip(commands, procs, outputs, strict=True):
        if proc.returncode != 0:
            first_error = next((ln for ln in out.splitlines() if "error" in ln), out.strip()[:200]).strip()
            detail = first_error or f"{Path(cmd[0]).name} exited with status {proc.returncode}"
            raise BuildError(f"{what} failed: {detail} (full log: {log})")


def build(verbose: bool = False) -> Path:
    """Path of the built extension module, compiling it first when the cache has none for this key."""
    cxx = compiler()
    key = build_key(cxx)
    directory = cache_root() / key
    output = directory / (MODULE_NAME + sysconfig.get_config_var("EXT_SUFFIX"))
    if output.exists():
        return output
    with locked(directory):
        if output.exists():  # another process built it while we waited for the lock
            return output
        if verbose:
            print(f"tinygpt: building the CPU kernels (once per machine, ~10-20 s) in {directory}",
                  file=sys.stderr)
        log = directory / "build.log"
        log.write_text("")
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            staged = Path(scratch) / output.name
            compiles, link = _commands(cxx, _paths(), Path(scratch), staged)
            _run_all(compiles, log, "compiling the kernels")
            _run_all([link], log, "linking the kernels")
            os.replace(staged, output)
    return output
