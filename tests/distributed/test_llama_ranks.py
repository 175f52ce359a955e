"""Data-parallel training of the llama arch: two ranks under `mlx.launch` equal one process."""

from __future__ import annotations

from pathlib import Path

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer

STEPS, TOL = 4, 1e-5
LLAMA = {"arch": "llama", "n_kv_heads": 1}


def test_two_llama_ranks_equal_one(make_cfg, launch, tmp_path: Path) -> None:
    one_cfg, _ = make_cfg("one", steps=STEPS, model=LLAMA)
    one = trainer.train(one_cfg, live=False)
    _, two_yaml = make_cfg("two", steps=STEPS, model=LLAMA)
    done = launch.mlx_launch(["train", "--config", str(two_yaml)])
    assert "WARN" not in done.stderr and "on 2 ranks" in done.stdout, done.stderr
    two_losses = launch.train_losses(tmp_path / "two")
    assert sorted(two_losses) == list(range(1, STEPS + 1))
    assert all(abs(two_losses[step] - one.losses[step]) <= TOL for step in two_losses)
    final = ck.step_dir_name(STEPS)
    assert "layers.0.self_attn.k_proj.weight" in ck.load_checkpoint(tmp_path / "two" / final).weights
    assert launch.max_weight_diff(tmp_path / "one" / final, tmp_path / "two" / final) <= TOL
