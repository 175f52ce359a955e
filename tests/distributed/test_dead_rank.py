"""A rank that dies or freezes: the others exit 75 within TINYGPT_DIST_TIMEOUT, the last checkpoint resumes.

Ranks are started by hand (not mlx.launch, which exits 0 whatever its ranks did) to read rank 0's own
exit code and time how long it outlives its peer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tinygpt_mlx.distributed import EXIT_PEER_LOST
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train import trainer

STEPS, FAULT_AT, LIMIT_S, SLACK_S, TOL = 10, 4, 3, 6, 1e-5


def wait_until(predicate, timeout: float) -> float:
    """Poll until predicate() holds; returns the time it did (fails the test after timeout)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return time.monotonic()
        time.sleep(0.02)
    pytest.fail(f"condition not met within {timeout} s")


def stopped(proc: subprocess.Popen) -> bool:
    """True once the process is stopped by SIGSTOP (state T in /proc)."""
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize(("fault", "says"), [
    ("exit", "failed in a collective"),  # a crash: the peer's socket closes and the ring backend raises
    ("hang", f"no answer from the other ranks for {LIMIT_S} s"),  # a freeze: sockets stay open, the watchdog fires
])
def test_peer_lost(make_cfg, launch, tmp_path: Path, fault: str, says: str) -> None:
    cfg, path = make_cfg("run", steps=STEPS)
    procs = launch.spawn_ranks(tmp_path, ["train", "--config", str(path)], env={"TINYGPT_DIST_TIMEOUT": str(LIMIT_S)},
                               fault=f"{fault}@{FAULT_AT}")
    rank0, rank1 = procs
    try:
        faulted = wait_until(lambda: rank1.poll() is not None or stopped(rank1), timeout=60)
        rank0.wait(timeout=LIMIT_S + SLACK_S)  # bounded: raises (and so fails) if rank 0 hangs on
        lost_after = time.monotonic() - faulted
    finally:
        if rank1.poll() is None:
            os.kill(rank1.pid, signal.SIGKILL)
        results = launch.finish(procs, timeout=30)
    code, stdout, stderr = results[0]
    assert code == EXIT_PEER_LOST, (stdout, stderr)
    assert lost_after <= LIMIT_S + SLACK_S
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and says in error[0] and "--resume auto" in error[0], stderr
    assert "Traceback" not in stderr

    # The newest checkpoint is whole (rank 0 never dies inside a save) and one rank resumes it exactly.
    run = tmp_path / "run"
    last = ck.find_resume(run)
    assert ck.step_of(last) in (FAULT_AT - 1, FAULT_AT)
    ck.verify_checkpoint(last)
    assert not [p for p in run.iterdir() if p.name.startswith(ck.TMP_PREFIX)]
    resumed = trainer.train(cfg, resume="auto", live=False)
    assert resumed.step == STEPS
    straight_cfg, _ = make_cfg("straight", steps=STEPS)
    straight = trainer.train(straight_cfg, live=False)
    for step, loss in resumed.losses.items():
        assert abs(loss - straight.losses[step]) <= TOL, step
    final = ck.step_dir_name(STEPS)
    assert launch.max_weight_diff(tmp_path / "straight" / final, run / final) <= TOL
