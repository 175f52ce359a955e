"""Device selection and the compute dtype a run gets on it."""

from __future__ import annotations

import pytest

from tinygpt_mlx.config import RuntimeConfig, load_config
from tinygpt_mlx.device import precision_notice


@pytest.mark.parametrize(("amp", "precision", "accelerator", "dtype"), [
    (True, "float32", True, "bfloat16"), (True, "float32", False, "float32"),
    (False, "bfloat16", False, "bfloat16"), (False, "float16", True, "float16"),
    (False, "float32", False, "float32"), (True, "float16", False, "float16"),
])
def test_amp_means_bfloat16_only_where_it_is_fast(amp, precision, accelerator, dtype) -> None:
    assert RuntimeConfig(amp=amp, precision=precision).compute_dtype(accelerator) == dtype


def test_amp_on_a_cpu_says_why_it_trains_in_float32() -> None:
    notice = precision_notice(RuntimeConfig(amp=True), accelerator=False)
    assert notice.startswith("runtime.amp: training in float32 on the CPU") and "\n" not in notice
    assert precision_notice(RuntimeConfig(amp=True), accelerator=True) is None
    assert precision_notice(RuntimeConfig(), accelerator=False) is None


def test_explicit_bfloat16_on_a_cpu_is_honoured_with_a_warning() -> None:
    notice = precision_notice(RuntimeConfig(precision="bfloat16"), accelerator=False)
    assert "honoured" in notice and "bfloat16" in notice
    assert precision_notice(RuntimeConfig(precision="bfloat16"), accelerator=True) is None


def test_sanity_config_trains_in_float32_on_a_cpu() -> None:
    runtime = load_config("configs/sanity.yaml").runtime
    assert runtime.amp and runtime.compute_dtype(accelerator=False) == "float32"
    assert precision_notice(runtime, accelerator=False) is not None
