"""Rotation in a real run: `best` and the newest survive; a delete that fails does not stop training."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer
from tinygpt_mlx.train.backend import MLXBackend


def test_rotation_keeps_best_and_newest(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation gets worse after step 2, so `best` stays on an old checkpoint while rotation runs.
    real_evaluate = MLXBackend.evaluate
    calls = {"n": 0}

    def worsening(*args: object, **kwargs: object) -> dict[str, float]:
        scores = real_evaluate(*args, **kwargs)
        calls["n"] += 1
        return {**scores, "val_loss": [5.0, 4.0, 4.5, 4.6, 4.7, 4.8, 4.9, 5.1][calls["n"] - 1]}

    monkeypatch.setattr(MLXBackend, "evaluate", worsening)
    cfg = make_cfg(eval={"eval_every": 1}, checkpoint={"keep_last_k": 2})
    result = trainer.train(cfg, live=False)
    run = Path(cfg.checkpoint.save_dir)
    assert [ck.step_of(p) for p in ck.list_checkpoints(run)] == [2, 7, 8]
    assert (run / "best").resolve() == run / "step-0000002" == result.best_checkpoint
    assert (run / "last").resolve() == run / "step-0000008"


def test_failing_delete_does_not_stop_training(make_cfg, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    real_rmtree = ck.shutil.rmtree

    def broken_rmtree(path: object, *args: object, **kwargs: object) -> None:
        if "delete-" in str(path):
            if kwargs.get("ignore_errors"):
                return
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ck.shutil, "rmtree", broken_rmtree)
    cfg = make_cfg(checkpoint={"keep_last_k": 1}, schedule={"max_steps": 4})
    with caplog.at_level(logging.WARNING):
        result = trainer.train(cfg, live=False)
    assert result.step == 4 and result.exit_code == 0
    assert caplog.text.count("could not delete old checkpoint") == 3
    run = Path(cfg.checkpoint.save_dir)
    assert ck.step_of(ck.find_resume(run)) == 4 and (run / "last").resolve() == run / "step-0000004"
