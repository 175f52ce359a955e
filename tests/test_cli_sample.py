"""`tinygpt sample` in a subprocess: seeded reproducibility, greedy by hand, EOS stop, timings, errors.

The checkpoints hold models with known logits: ln_f's weight is zero and its bias the unit vector e0, so
every position gets logits wte[:, 0], which the test sets directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.tokenizers.char import train_char
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
D = 16


def tinygpt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygpt_mlx", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def save_known_logits(run: Path, favourite: str | None, make_config) -> Path:
    """A checkpoint whose logits favour `favourite` (None: EOS) by 3 nats over a near-flat rest."""
    cfg = make_config(run, model={"d_model": D, "n_layers": 1, "max_seq_len": 16}, data={"block_size": 16},
                      schedule={"max_steps": 2, "warmup_steps": 0})
    tok = train_char(["a cat sat on a mat"])
    mx.random.seed(0)
    model = TinyGPT(cfg.model, tok.vocab_size)
    logits = 0.1 * mx.random.normal((tok.vocab_size,))
    best = tok.eos_id if favourite is None else tok.encode(favourite)[0]
    logits[best] = 3.0
    wte = 0.02 * mx.random.normal((tok.vocab_size, D))
    wte[:, 0] = logits
    model.wte.weight = wte
    model.ln_f.weight = mx.zeros((D,))
    model.ln_f.bias = mx.zeros((D,))
    model.ln_f.bias[0] = 1.0
    optimizer = build_optimizer(cfg, 2)
    optimizer.init(model.trainable_parameters())
    return ck.save_checkpoint(run, 1, model, optimizer, cfg, tok, {"step": 1, "tokens_seen": 16})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, make_config) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample")
    save_known_logits(root / "m", "m", make_config)
    save_known_logits(root / "eos", None, make_config)
    return {"m": root / "m", "eos": root / "eos"}


def test_seed_reproducible_and_seeds_differ(runs) -> None:
    args = ("sample", "--checkpoint", str(runs["m"]), "--prompt", "a cat", "--max-new-tokens", "30",
            "--temperature", "1.5", "--num-samples", "2")
    first, again, other = (tinygpt(*args, "--seed", s) for s in ("3", "3", "4"))
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    assert "--- sample 1/2 (seed 3) ---" in first.stdout and "--- sample 2/2 (seed 4) ---" in first.stdout
    texts = [line for line in first.stdout.splitlines() if line.startswith("a cat")]
    assert len(texts) == 2 and texts[0] != texts[1]
    # sample 2 of seed 3 uses seed 4, the same as sample 1 of seed 4
    assert texts[1] == [line for line in other.stdout.splitlines() if line.startswith("a cat")][0]


def test_greedy_picks_the_favourite_every_step(runs) -> None:
    # --checkpoint accepts the step folder, the `last` link and the run folder alike
    for path in (runs["m"] / "step-0000001", runs["m"] / "last", runs["m"]):
        done = tinygpt("sample", "--checkpoint", str(path), "--prompt", "a cat", "--temperature", "0",
                       "--max-new-tokens", "7")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "a cat" + "m" * 7 + "\n"


def test_stops_at_eos_and_reports_timings(runs) -> None:
    done = tinygpt("sample", "--checkpoint", str(runs["eos"]), "--prompt", "a mat", "--temperature", "0",
                   "--verbose")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "a mat"  # EOS came first: nothing generated
    assert "prefill 5 tokens," in lines[1] and "tok/s | decode 0 tokens," in lines[1]


@pytest.mark.parametrize("args, message", [
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
])
def test_bad_options_exit_2(runs, args: list[str], message: str) -> None:
    done = tinygpt("sample", "--checkpoint", str(runs["m"]), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_missing_checkpoint_exit_2(tmp_path: Path) -> None:
    done = tinygpt("sample", "--checkpoint", str(tmp_path / "nope"))
    assert done.returncode == 2 and "checkpoint not found" in done.stderr
