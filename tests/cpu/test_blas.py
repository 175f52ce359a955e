"""The BLAS loader: a real optimised kernel from the pip OpenBLAS, chosen right for the CPU, reported."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinygpt_mlx.cpu import blas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS loader only acts on Linux")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=180)


def test_this_process_runs_an_optimised_openblas_kernel() -> None:
    assert blas.ensure_fast_blas() == "loaded"
    info = blas.blas_info()
    assert info["library"].startswith(("OpenBLAS", "Intel")), info
    if info["library"].startswith("OpenBLAS"):
        assert info["kernel"], info
        assert not blas.is_generic_kernel(info["kernel"], blas.cpu_simd()), info
        assert info["threads"] >= 1
    if "TINYGPT_BLAS" not in os.environ:
        assert info["source"] == "pip scipy-openblas32"


def test_mlx_resolves_cblas_sgemm_to_the_loaded_library() -> None:
    import mlx.core as mx
    import numpy as np

    assert blas.ensure_fast_blas() == "loaded"
    # libmlx.so binds cblas_sgemm by a global-scope lookup: it must find the loaded library's, not the wheel's.
    address = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    ours = ctypes.cast(ctypes.CDLL(blas.blas_info()["path"]).cblas_sgemm, ctypes.c_void_p).value
    assert address == ours
    a = mx.random.normal((64, 48), key=mx.random.key(0))
    b = mx.random.normal((48, 32), key=mx.random.key(1))
    got = np.array(mx.matmul(a, b, stream=mx.cpu))
    np.testing.assert_allclose(got, np.array(a) @ np.array(b), rtol=1e-4, atol=1e-4)


def test_renamed_copy_exports_plain_cblas_names_and_is_cached(tmp_path: Path, monkeypatch) -> None:
    source = blas._pip_openblas()
    if source is None:
        pytest.skip("scipy-openblas32 is not installed")
    monkeypatch.setenv("TINYGPT_BLAS_CACHE", str(tmp_path))
    copy = blas.renamed_copy(source)
    assert copy is not None and copy.parent.parent == tmp_path
    lib = ctypes.CDLL(str(copy), mode=ctypes.RTLD_LOCAL)
    for name in blas.MLX_BLAS_NAMES + blas.OPENBLAS_CONTROLS:
        assert hasattr(lib, name), name
    assert not hasattr(lib, "cblas_ssymm")  # only what MLX imports is renamed: nothing else is interposed
    monkeypatch.setattr(blas, "_patchelf", lambda: None)  # a second call finds the copy without patchelf
    assert blas.renamed_copy(source) == copy


@pytest.mark.parametrize(("kernel", "simd", "generic"), [
    ("Prescott", "avx512", True), ("Sandybridge", "avx2", True), ("Nehalem", "avx2", True),
    ("Haswell", "avx2", False), ("Zen", "avx2", False), ("SkylakeX", "avx512", False),
    ("Cooperlake", "avx512", False), ("SapphireRapids", "avx512", False), ("Prescott", "", False),
    ("NeoverseN1", "", False),
])
def test_generic_kernel_table(kernel: str, simd: str, generic: bool) -> None:
    assert blas.is_generic_kernel(kernel, simd) is generic


@pytest.mark.parametrize(("own_choice", "simd", "expected"), [
    ("Prescott", "avx512", "SkylakeX"), ("Prescott", "avx2", "Haswell"), ("Zen", "avx2", ""),
    ("SkylakeX", "avx512", ""), ("Prescott", "", ""),
])
def test_generic_fallback_is_corrected_before_loading(own_choice: str, simd: str, expected: str, tmp_path: Path,
                                                      monkeypatch) -> None:
    library = tmp_path / "libopenblas.so"
    library.write_bytes(b"not loaded by this test")
    asked = []
    monkeypatch.setenv("TINYGPT_BLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)  # only the decision runs here; nothing is loaded
    monkeypatch.setattr(blas, "_own_kernel_choice", lambda path: asked.append(path) or own_choice)
    assert blas._choose_coretype(library, simd) == expected
    assert blas._choose_coretype(library, simd) == expected
    assert len(asked) == (1 if simd else 0)  # the library's own choice is asked once per CPU and library


def test_a_users_coretype_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setattr(blas, "_own_kernel_choice", lambda path: pytest.fail("must not probe"))
    assert blas._choose_coretype(tmp_path / "lib.so", "avx512") == ""


def test_missing_blas_warns_once_naming_the_fix() -> None:
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import tinygpt_mlx.cpu.blas as b\n    b.ensure_fast_blas()\n"
            "print(b.ensure_fast_blas()); print(len(w)); print(w[0].message)\n")
    out = run_python(code, TINYGPT_BLAS="/nonexistent/libopenblas.so")
    status, count, message = out.stdout.splitlines()[:3]
    assert (status, count) == ("missing", "1"), out.stderr
    assert "TINYGPT_BLAS=/nonexistent/libopenblas.so" in message


def test_reference_blas_when_disabled() -> None:
    out = run_python("import tinygpt_mlx.cpu.blas as b; print(b.ensure_fast_blas(), b.blas_description())",
                     TINYGPT_BLAS="none")
    assert out.stdout.strip() == "disabled bundled reference BLAS (TINYGPT_BLAS=none)"


def test_too_late_when_mlx_is_imported_first() -> None:
    out = run_python("import mlx.core, tinygpt_mlx.cpu.blas as b; print(b.ensure_fast_blas())",
                     TINYGPT_QUIET_BLAS="1")
    assert out.stdout.strip() == "too-late"
