"""`mlx.launch --backend ring -n 2` with batch B (B/2 rows per rank) equals one process with batch B."""

from __future__ import annotations

from pathlib import Path

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer
from tinygpt_mlx.train.metrics import METRICS_FILE, read_metrics

STEPS, TOL = 10, 1e-5


def test_two_ranks_equal_one(make_cfg, launch, tmp_path: Path) -> None:
    one_cfg, _ = make_cfg("one", steps=STEPS)
    one = trainer.train(one_cfg, live=False)
    _, two_yaml = make_cfg("two", steps=STEPS)
    done = launch.mlx_launch(["train", "--config", str(two_yaml)])
    assert "WARN" not in done.stderr, done.stderr  # mlx.launch warns about every rank that failed
    two_dir = tmp_path / "two"

    # The same loss at every step (the logged loss is the mean over both ranks' halves).
    two_losses = launch.train_losses(two_dir)
    assert sorted(two_losses) == list(range(1, STEPS + 1))  # rank 0 alone wrote metrics: no duplicates
    for step in range(1, STEPS + 1):
        assert abs(two_losses[step] - one.losses[step]) <= TOL, step
    # The same weights after the last step, and the same sharded-then-summed validation loss.
    assert launch.max_weight_diff(tmp_path / "one" / ck.step_dir_name(STEPS), two_dir / ck.step_dir_name(STEPS)) <= TOL
    one_eval = read_metrics(tmp_path / "one" / METRICS_FILE, "eval")
    two_eval = read_metrics(two_dir / METRICS_FILE, "eval")
    assert [r["step"] for r in two_eval] == [r["step"] for r in one_eval] == [5, 10]
    for a, b in zip(one_eval, two_eval, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) <= TOL
    assert ck.verify_checkpoint(two_dir / ck.step_dir_name(STEPS))
    assert (two_dir / "run_config.yaml").is_file() and (two_dir / "env.json").is_file()

    # Only rank 0 printed (mlx.launch merges both ranks' output).
    assert done.stdout.count("training ") == 1, done.stdout
    assert "on 2 ranks (4 sequences each per micro-batch)" in done.stdout
    assert done.stdout.count(f"step {STEPS}/{STEPS}") == 1
