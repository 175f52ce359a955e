"""Output paths that are files, inside files or unwritable, for every command that writes; two trainers on one
run folder; Ctrl-C during a checkpoint save. Nothing is changed and no empty folder is left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tinygpt_mlx.paths import folder_lock
from tinygpt_mlx.train import checkpoint as ck

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "tests" / "data" / "seed_configs" / "base_config.yaml"


def commands(trained, out: Path, tmp_path: Path) -> dict[str, tuple[list[object], str]]:
    """Every writing command with `out` as its output path, and the option the message names."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base_config: {trained.config}\ngrid: {{model.d_model: [16, 32]}}\n")
    seal = ["-c", trained.config, "-o", "seal.enabled=true", "--init-from", trained.run]
    return {
        "train": (["train", "-c", trained.config, "--save_dir", out], "checkpoint.save_dir"),
        "data prepare": (["data", "prepare", "-c", trained.config, "-o", f"data.cache_dir={out}"], "data.cache_dir"),
        "train cache": (["train", "-c", trained.config, "--save_dir", tmp_path / "run", "-o",
                         f"data.cache_dir={out}"], "data.cache_dir"),
        "eval": (["eval", "--checkpoint_dir", trained.run, "--output_dir", out], "--output_dir"),
        "export": (["export", "--checkpoint", trained.run, "--format", "hf", "-o", out], "--output"),
        "import": (["import", "gpt2", "--hf-dir", trained.run, "-o", out], "--output"),
        "sweep": (["sweep", "-c", sweep, "--output_dir", out], "--output_dir"),
        "scaling fit": (["scaling", "fit", "--results", trained.run, "--output_dir", out], "--output_dir"),
        "seal adapt": (["seal", "adapt", *seal, "--run_dir", out], "seal.run_dir"),
        "seal analyze": (["seal", "analyze", "--run_dir", trained.run, "--out", out], "--out"),
        "bench --json": (["bench", "--sizes", "tiny", "--json", out / "bench.json"], "--json"),
        "bench --plot": (["bench", "--sizes", "tiny", "--plot", out / "bench.png"], "--plot"),
        "config migrate": (["config", "migrate", SEED_CONFIG, "-o", out / "new.yaml"], "--output"),
    }


COMMANDS = ["train", "data prepare", "train cache", "eval", "export", "import", "sweep", "scaling fit",
            "seal adapt", "seal analyze", "bench --json", "bench --plot", "config migrate"]
FILE_OUTPUTS = ("bench --json", "bench --plot", "config migrate")  # they name a file inside `out`


@pytest.mark.parametrize("command", COMMANDS)
def test_output_path_that_is_a_file(command: str, trained, refused, tmp_path) -> None:
    out = tmp_path / "taken"
    out.write_text("a file the user cares about")
    args, option = commands(trained, out, tmp_path)[command]
    shown = "lies inside" if command in FILE_OUTPUTS else "is a file, not a folder"
    refused(args, option, shown)


@pytest.mark.parametrize("command", COMMANDS)
def test_output_path_inside_a_file(command: str, trained, refused, tmp_path) -> None:
    (tmp_path / "taken").write_text("a file the user cares about")
    args, option = commands(trained, tmp_path / "taken" / "sub", tmp_path)[command]
    refused(args, option, f"lies inside {tmp_path / 'taken'}, which is a file, not a folder")


@pytest.mark.parametrize("command", COMMANDS)
def test_output_path_in_a_read_only_folder(command: str, trained, refused, tmp_path, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: answer for this folder as the system would for a user
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else access(path, mode))
    try:
        args, option = commands(trained, locked / "out", tmp_path)[command]
        refused(args, option, "cannot be written")
    finally:
        locked.chmod(0o755)


def test_migrating_a_config_onto_itself(refused, write) -> None:
    old = write("old.yaml", "training:\n  max_steps: 5\n")
    refused(["config", "migrate", old, "-o", old], "is the file being migrated; write the translation to a new file")


def test_bench_output_that_is_a_folder(refused, tmp_path) -> None:
    refused(["bench", "--sizes", "tiny", "--json", tmp_path], f"--json {tmp_path} is a folder; give a file name")


def test_a_failed_command_removes_the_folders_it_created(trained, refused, tmp_path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    refused(["train", "-c", trained.config, "--save_dir", deep, "--resume", tmp_path / "nope"], "checkpoint not found")
    refused(["eval", "--checkpoint_dir", trained.run, "--output_dir", deep, "-o", "eval.eval_subset=0"],
            "eval.eval_subset must be positive")
    refused(["import", "gpt2", "--hf-dir", tmp_path, "-o", deep], "config.json is missing")
    refused(["scaling", "fit", "--results", trained.run, "--output_dir", deep], "no law can be fit to 1 finished run")
    assert sorted(tmp_path.iterdir()) == []


def test_two_trainers_on_one_run_folder(trained, refused, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with folder_lock(run, "training into"):  # what the first trainer holds while it runs
        refused(["train", "-c", trained.config, "--save_dir", run],
                f"another process is training into {run}; wait for it to finish")


def _train_interrupted_in_save(sigint_during, config: Path, run: Path, signals: int):
    """`tinygpt train` in a real process that gets `signals` SIGINTs while it writes the step-4 checkpoint."""
    return sigint_during("tinygpt_mlx.train.checkpoint._save_arrays",
                         "path.parent.name.startswith('.tmp-step-0000004') and path.name == 'model.safetensors'",
                         ["train", "-c", config, "--save_dir", run, "--max-steps", "6", "-o", "checkpoint.save_every=2"],
                         signals)


def test_ctrl_c_during_a_checkpoint_save(trained, sigint_during, tmp_path) -> None:
    # Once: the save in flight completes, then the run stops with a checkpoint to resume.
    once = _train_interrupted_in_save(sigint_during, trained.config, tmp_path / "once", 1)
    assert once.returncode == 128 + signal.SIGINT, once.stderr
    assert "continue with --resume auto" in once.stdout and "Traceback" not in once.stderr
    assert [ck.step_of(p) for p in ck.list_checkpoints(tmp_path / "once")] == [2, 4]

    # Twice: the second Ctrl-C aborts the save; step 2 stays the newest checkpoint, no temporary folder stays.
    twice = _train_interrupted_in_save(sigint_during, trained.config, tmp_path / "twice", 2)
    assert twice.returncode == 130 and twice.stderr.strip().splitlines()[-1] == "interrupted", twice.stderr
    assert "Traceback" not in twice.stderr
    names = sorted(p.name for p in (tmp_path / "twice").iterdir())
    assert names == ["env.json", "last", "metrics.jsonl", "run_config.yaml", "step-0000002"]
    assert ck.find_resume(tmp_path / "twice").name == "step-0000002"


def test_paths_the_system_refuses(trained, refused, tmp_path) -> None:
    long = tmp_path / ("a" * 300)
    for args in (["train", "-c", trained.config, "--save_dir", long], ["config", "show", long],
                 ["data", "prepare", "-c", trained.config, "--data-dir", long], ["sample", "--checkpoint", long],
                 ["export", "--checkpoint", trained.run, "--format", "hf", "-o", long]):
        refused(args, "File name too long")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    refused(["train", "-c", trained.config, "--save_dir", tmp_path / "loop"], "is a link to nothing")
    refused(["eval", "--checkpoint", trained.run, "--output_dir", tmp_path / "loop" / "eval"], "is a link to nothing")
    refused(["sample", "--checkpoint", tmp_path / "loop"], "points at a missing folder")
