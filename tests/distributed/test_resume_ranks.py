"""Resume across a change of rank count: the sampler state is global, so 2 ranks + 1 rank = 1 rank straight."""

from __future__ import annotations

import shutil
from pathlib import Path

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer

STEPS, STOP, TOL = 10, 5, 1e-5


def test_resume_with_another_rank_count(make_cfg, launch, tmp_path: Path) -> None:
    straight_cfg, _ = make_cfg("straight", steps=STEPS)
    straight = trainer.train(straight_cfg, live=False)
    final = tmp_path / "straight" / ck.step_dir_name(STEPS)

    # 2 ranks for 5 steps, stopped by a SIGTERM that only rank 1 receives: both ranks stop after the same
    # step, rank 0 saves, both exit 143. Then 1 rank resumes to the end.
    cfg, path = make_cfg("two_then_one", steps=STEPS)
    results = launch.finish(launch.spawn_ranks(tmp_path, ["train", "--config", str(path)], fault=f"sigterm@{STOP}"))
    assert [code for code, _, _ in results] == [143, 143], results
    assert "stopped by signal 15 at step 5" in results[0][1] and "stopped by signal" not in results[1][1]
    assert ck.step_of(ck.find_resume(tmp_path / "two_then_one")) == STOP
    resumed = trainer.train(cfg, resume="auto", live=False)
    assert sorted(resumed.losses) == list(range(STOP + 1, STEPS + 1))
    losses = launch.train_losses(tmp_path / "two_then_one")
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert abs(losses[step] - straight.losses[step]) <= TOL, step
    assert launch.max_weight_diff(final, tmp_path / "two_then_one" / ck.step_dir_name(STEPS)) <= TOL

    # The other way: 2 ranks (mlx.launch) continue the straight run's 1-rank checkpoint at step 5.
    _, path = make_cfg("one_then_two", steps=STEPS)
    run = tmp_path / "one_then_two"
    run.mkdir()
    shutil.copytree(tmp_path / "straight" / ck.step_dir_name(STOP), run / ck.step_dir_name(STOP), symlinks=True)
    done = launch.mlx_launch(["train", "--config", str(path), "--resume", "auto"])
    assert "WARN" not in done.stderr, done.stderr
    assert f"resuming from {run / ck.step_dir_name(STOP)} at step {STOP}" in done.stdout
    for step, loss in launch.train_losses(run).items():
        assert abs(loss - straight.losses[step]) <= TOL, step
    assert launch.max_weight_diff(final, run / ck.step_dir_name(STEPS)) <= TOL
