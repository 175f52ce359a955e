"""`tinygpt config show|migrate`, and the original TinyGPT configs through `train` and `sweep`, run as a user
runs them (a subprocess in a scratch folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinygpt_mlx.config import Config, load_config
from tinygpt_mlx.scaling.sweep import expand, load_sweep

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "tests" / "data" / "seed_configs"


def tinygpt(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygpt_mlx", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if not line.startswith("note: ")]


def test_train_two_steps_from_an_original_config(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = json.loads((SEED / "sample_custom.json").read_text())
    raw["data"]["train_file"] = str(tiny_corpus / "tinystories_train.txt")
    config = tmp_path / "sample_custom.json"
    config.write_text(json.dumps(raw))
    done = tinygpt("train", "--config", str(config), "--max-steps", "2", "-o", "eval.sample_n=0",
                   "-o", "eval.eval_subset=512", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    notes = done.stderr.splitlines()
    assert notes[0].startswith(f"note: {config} is in the original TinyGPT layout; translated 27 settings")
    assert notes[1] == "note: schedule.warmup_steps 100 clamped to this short run's 2 steps"
    assert "step 2/2 | loss" in done.stdout and "eval step 2 | val_loss" in done.stdout
    run = yaml.safe_load((tmp_path / "checkpoints" / "sample_custom" / "run_config.yaml").read_text())
    assert run["data"]["dataset"] == "local" and run["data"]["data_dir"] == raw["data"]["train_file"]
    assert (run["data"]["val_frac"], run["data"]["block_size"], run["data"]["num_workers"]) == (0.1, 128, 1)
    schedule = run["schedule"]
    assert (schedule["max_steps"], schedule["warmup_steps"], schedule["epochs"]) == (2, 2, 6.0)
    assert (run["optim"]["lr"], run["eval"]["eval_every"], run["checkpoint"]["save_every"]) == \
        (5e-4, 100, 200)


def test_a_missing_corpus_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = tinygpt("train", "--config", str(SEED / "sample_custom.json"), "--max-steps", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert errors(done) == ["error: data path not found: data/sample/sample_text.txt (set data.data_dir or "
                            "TINYGPT_DATA_DIR to existing files)"]


def test_sweep_dry_run_expands_an_original_sweep_block(tmp_path: Path) -> None:
    done = tinygpt("sweep", "--config", str(SEED / "scaling_width.yaml"), "--output_dir", str(tmp_path / "w"),
                   "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "5 runs" in done.stdout
    for width in (64, 128, 256, 384, 512):
        assert f"d_model-{width} " in done.stdout
    assert len(done.stderr.splitlines()) == 1
    assert "its sweep: block is expanded by `tinygpt sweep`" in done.stderr


def test_config_migrate_round_trips(tmp_path: Path) -> None:
    for name in ("base_config.yaml", "scaling_width.yaml"):
        new = tmp_path / f"new_{Path(name).stem}.yaml"
        done = tinygpt("config", "migrate", str(SEED / name), "-o", str(new))
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # the translation is written, not announced as a notice
        assert "# from training.learning_rate" in new.read_text()
        assert load_config(new) == load_config(SEED / name)
    sweep_file = tmp_path / "new_scaling_width_sweep.yaml"
    assert yaml.safe_load(sweep_file.read_text())["base_config"] == "new_scaling_width.yaml"
    ours = expand(load_sweep(sweep_file), tmp_path / "out")
    theirs = expand(load_sweep(SEED / "scaling_width.yaml"), tmp_path / "out")
    assert [(r.name, r.config) for r in ours] == [(r.name, r.config) for r in theirs]

    ours_already = str(REPO / "configs" / "base_config.yaml")
    refused = tinygpt("config", "migrate", ours_already, "-o", str(tmp_path / "x"))
    assert refused.returncode == 2 and "needs no migration" in refused.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("source", [None, "base_config.yaml"])
def test_config_show_prints_every_default(source: str | None) -> None:
    args = [str(SEED / source)] if source else []
    done = tinygpt("config", "show", *args, "-o", "optim.lr=1e-3")
    assert done.returncode == 0, done.stderr
    shown = yaml.safe_load(done.stdout)
    expected = load_config(SEED / source if source else None, ["optim.lr=1e-3"])
    assert shown == expected.to_dict()
    defaults = Config().to_dict()
    assert {s: set(v) for s, v in shown.items()} == {s: set(v) for s, v in defaults.items()}
