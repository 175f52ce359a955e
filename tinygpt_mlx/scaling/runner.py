"""Running a sweep: each run trains in its own process (or in this one), complete runs are skipped.

Layout of a sweep folder:
    DIR/sweep.yaml            the sweep file as given
    DIR/configs/<name>.yaml   each run's full config (what `tinygpt train --config` gets)
    DIR/runs/<name>/          each run folder (checkpoints, metrics.jsonl, train.log, DONE or FAILED)
    DIR/sweep_summary.csv     one row per run, rewritten after every run
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tinygpt_mlx.config import ConfigError, dump_config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.scaling.runs import (
    DONE_FILE,
    FAILED_FILE,
    SUMMARY_FILE,
    is_complete,
    summarize_run,
    write_summary,
)
from tinygpt_mlx.scaling.sweep import Sweep, SweepRun

# A runner trains one run (resuming whatever it left) and returns the exit code of `tinygpt train`.
Runner = Callable[[SweepRun, Path, Path], int]  # (run, its config file, its log file) -> exit code
STOP_CODES = (130, 143)  # the trainer was stopped by SIGINT / SIGTERM after saving a checkpoint


def subprocess_runner(threads: int | None = None) -> Runner:
    """Run `python -m tinygpt_mlx train --config CFG --resume auto` as a child process, output to the log."""

    def run(sweep_run: SweepRun, config_path: Path, log_path: Path) -> int:
        env = dict(os.environ)
        if threads is not None:
            # N jobs on C cores: give each child C/N BLAS threads instead of letting every child spawn C.
            # TINYGPT_CPU_CORES sizes the training step's CPU lanes the same way (cpu/lanes.py).
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYGPT_CPU_CORES"):
                env.setdefault(var, str(threads))
        cmd = [sys.executable, "-m", "tinygpt_mlx", "train", "--config", str(config_path), "--resume", "auto"]
        with open(log_path, "a") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            while True:
                try:
                    return proc.wait()
                except KeyboardInterrupt:
                    continue  # Ctrl-C reached the child too: let it save its checkpoint and exit 130
    return run


def in_process_runner(sweep_run: SweepRun, config_path: Path, log_path: Path) -> int:
    """Train in this process (no start-up cost; used by tests and `--in-process`)."""
    from tinygpt_mlx.train.trainer import train

    with open(log_path, "a") as log, contextlib.redirect_stdout(log):
        try:
            return train(sweep_run.config, resume="auto", live=False).exit_code
        except (ConfigError, UserError) as err:
            print(f"error: {err}", file=log)
            return 2


class SweepExecution:
    """Runs the not-yet-complete runs of a sweep, `jobs` at a time, keeping the summary current."""

    def __init__(self, sweep: Sweep, runs: list[SweepRun], out_dir: str | Path, jobs: int = 1,
                 runner: Runner | None = None, say: Callable[[str], None] = print):
        self.sweep, self.runs, self.out_dir, self.jobs = sweep, runs, Path(out_dir), max(1, jobs)
        threads = max(1, (os.cpu_count() or 1) // self.jobs) if self.jobs > 1 else None
        self.runner = runner or subprocess_runner(threads)
        self.say = say
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    def run_dir(self, run: SweepRun) -> Path:
        return Path(run.config.checkpoint.save_dir)

    def rows(self) -> list[dict[str, Any]]:
        """Current summary rows of every run, read back from disk."""
        return [summarize_run(self.run_dir(r), r.name, r.values) for r in self.runs]

    def write_summary(self) -> Path:
        with self._lock:
            return write_summary(self.rows(), self.out_dir / SUMMARY_FILE, self.sweep.keys)

    def prepare(self) -> None:
        """Write sweep.yaml and every run's config; tokenise shared data once before parallel runs start."""
        (self.out_dir / "configs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.sweep.path, self.out_dir / "sweep.yaml")
        for run in self.runs:
            dump_config(run.config, self.config_path(run))
        if self.jobs > 1:
            # Two children preparing the same token cache would both do the work; do it here once.
            from tinygpt_mlx.data.prepare import prepare_data

            seen: set[str] = set()
            for run in self.runs:
                key = json.dumps(run.config.to_dict()["data"], sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    prepare_data(run.config)

    def config_path(self, run: SweepRun) -> Path:
        return self.out_dir / "configs" / f"{run.name}.yaml"

    def execute(self) -> int:
        """Train every incomplete run; returns 0, or the stop code when a run was interrupted."""
        self.prepare()
        todo = []
        for run in self.runs:
            if is_complete(self.run_dir(run)):
                self.say(f"skip {run.name}: already complete")
            else:
                todo.append(run)
        self.write_summary()
        if self.jobs == 1:
            # In the main thread, so an in-process trainer can catch Ctrl-C and save before stopping.
            codes = [self._one(run) for run in todo]
        else:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = [pool.submit(self._one, run) for run in todo]
                try:
                    codes = [f.result() for f in futures]
                except KeyboardInterrupt:
                    self.stopped.set()  # children got the same Ctrl-C; wait while they save
                    codes = [f.result() for f in futures] + [STOP_CODES[0]]
        code = next((c for c in codes if c in STOP_CODES), 0)
        self.write_summary()
        return code

    def _one(self, run: SweepRun) -> int:
        if self.stopped.is_set():
            return 0
        run_dir = self.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / FAILED_FILE).unlink(missing_ok=True)
        self.say(f"start {run.name} -> {run_dir}")
        t0 = time.time()
        code = self.runner(run, self.config_path(run), run_dir / "train.log")
        wall = round(time.time() - t0, 3)
        if code in STOP_CODES:
            self.stopped.set()
            self.say(f"stopped {run.name} (exit {code}); run the sweep again to resume it")
        elif code == 0 and is_complete(run_dir):
            (run_dir / DONE_FILE).write_text(json.dumps({"exit_code": 0, "process_wall_s": wall}) + "\n")
            self.say(f"done {run.name} in {wall:.0f}s")
        else:
            (run_dir / FAILED_FILE).write_text(json.dumps({"exit_code": code, "process_wall_s": wall}) + "\n")
            self.say(f"FAILED {run.name} (exit {code}); see {run_dir / 'train.log'}")
        self.write_summary()
        return code
