"""Building and loading the kernels: the cache key, the switch, and a clear fallback when a build fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinygpt_mlx.cpu import kernels
from tinygpt_mlx.cpu.kernels import build


def test_build_key_changes_with_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cxx = build.compiler()
    before = build.build_key(cxx)
    assert build.build_key(cxx) == before
    copy = tmp_path / "csrc"
    copy.mkdir()
    for source in build.SOURCE_DIR.iterdir():
        (copy / source.name).write_bytes(source.read_bytes())
    (copy / "attention.cpp").write_text((copy / "attention.cpp").read_text() + "\n// changed\n")
    monkeypatch.setattr(build, "SOURCE_DIR", copy)
    assert build.build_key(cxx) != before


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TINYGPT_KERNEL_CACHE", str(tmp_path / "k"))
    assert build.cache_root() == tmp_path / "k"
    monkeypatch.delenv("TINYGPT_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.cache_root() == tmp_path / "tinygpt_mlx" / "kernels"


def run_child(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


CHILD = """
    import warnings
    import tinygpt_mlx
    import mlx.core as mx
    from tinygpt_mlx.config import ModelConfig
    from tinygpt_mlx.cpu import kernels
    from tinygpt_mlx.cpu.modules import use_cpu_modules
    from tinygpt_mlx.model import TinyGPT
    model = use_cpu_modules(TinyGPT(ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=64), 20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logits = model(mx.zeros((1, 64), dtype=mx.int32))
        mx.eval(logits)
    print("STATUS", kernels.status())
    print("WARNINGS", len(caught), " | ".join(str(w.message) for w in caught))
"""


def test_a_failed_build_warns_once_and_the_cpu_model_falls_back(tmp_path: Path):
    # `false` as the compiler: the compile step fails, as it would with a broken toolchain.
    result = run_child(CHILD, CXX="false", TINYGPT_KERNEL_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "STATUS unavailable: compiling the kernels failed: false exited with status 1" in result.stdout
    assert "WARNINGS 1 tinygpt: CPU kernels unavailable" in result.stdout
    assert (tmp_path / next(os.walk(tmp_path))[1][0] / "build.log").exists()


def test_switched_off_by_the_environment_builds_nothing(tmp_path: Path):
    result = run_child(CHILD, TINYGPT_KERNELS="0", TINYGPT_KERNEL_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "STATUS off (TINYGPT_KERNELS=0)" in result.stdout
    assert "WARNINGS 0" in result.stdout
    assert not any(tmp_path.iterdir())


def test_load_returns_the_module_from_the_cache():
    kernels.reset()
    module = kernels.load()
    assert module is not None, kernels.status()
    assert kernels.status().startswith("ready (")
    assert kernels.load() is module


def test_a_module_that_cannot_take_mx_arrays_is_refused():
    # What an MLX built with another nanobind ABI looks like from here: the call rejects mx.array.
    class Foreign:
        @staticmethod
        def gelu(x):
            raise TypeError("gelu(): incompatible function arguments")

    with pytest.raises(TypeError, match="nanobind ABI"):
        kernels._smoke_test(Foreign)
    kernels._smoke_test(kernels.load())  # the real module passes
