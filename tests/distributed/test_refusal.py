"""What two ranks refuse: a global batch they cannot split evenly, and the torch backend."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(("override", "message"), [
    ("data.batch_size=5", "data.batch_size (5) is the global batch and must be divisible by the number of "
                          "ranks (2); use a multiple of 2"),
    ("runtime.backend=torch", "runtime.backend torch does not run under mlx.launch"),
])
def test_refused_on_every_rank(make_cfg, launch, tmp_path: Path, override: str, message: str) -> None:
    _, path = make_cfg("run")
    results = launch.finish(launch.spawn_ranks(tmp_path, ["train", "--config", str(path), "--override", override]), timeout=30)
    for code, stdout, stderr in results:
        assert code == 2, (stdout, stderr)
        assert message in stderr.replace("\n", " ")
        assert "Traceback" not in stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before anything was written
