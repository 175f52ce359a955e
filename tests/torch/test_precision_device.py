"""Precision and device choices of the torch path: bf16 autocast with float32 masters, clear refusals."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer

torch = pytest.importorskip("torch")


def test_bfloat16_autocast_keeps_float32_state(make_cfg, tmp_path: Path) -> None:
    bf16 = trainer.train(make_cfg(tmp_path / "bf16", "torch", runtime={"precision": "bfloat16"},
                                  eval={"sample_n": 0}), live=False)
    fp32 = trainer.train(make_cfg(tmp_path / "fp32", "torch", eval={"sample_n": 0}), live=False)
    # bf16 rounds activations (~3 significant digits), so it follows fp32 closely but not exactly.
    assert bf16.losses[12] == pytest.approx(fp32.losses[12], abs=0.05) and bf16.losses[12] != fp32.losses[12]
    saved = ck.load_checkpoint(tmp_path / "bf16" / "run")
    assert {v.dtype for v in saved.weights.values()} == {mx.float32}
    assert saved.state["loss_scale"] == {"scale": 1.0, "good_steps": 0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA")
@pytest.mark.parametrize("runtime, message", [
    ({"precision": "float16"}, "float16 with --backend torch needs CUDA"),
    ({"device": "gpu"}, "runtime.device gpu with --backend torch needs CUDA"),
])
def test_cuda_only_options_refused_on_cpu(make_cfg, tmp_path: Path, runtime: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        trainer.train(make_cfg(tmp_path, "torch", runtime=runtime), live=False)
