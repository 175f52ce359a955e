"""Faults around checkpoints: corrupt files refused by name, disk full mid-save, a crash mid-save."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.train import checkpoint as ck

REPO = Path(__file__).resolve().parents[2]

# A tiny model, optimizer and tokenizer; `save(step)` writes one checkpoint into RUN.
SETUP = textwrap.dedent("""
    import sys
    import tinygpt_mlx
    import mlx.core as mx
    from tinygpt_mlx.config import from_dict
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.tokenizers.char import train_char
    from tinygpt_mlx.train import checkpoint as ck
    from tinygpt_mlx.train.optim import build_optimizer

    RUN = sys.argv[1]
    cfg = from_dict({"model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 8},
                     "data": {"block_size": 8}, "schedule": {"max_steps": 4, "warmup_steps": 0}})
    tok = train_char(["a tiny story"])
    mx.random.seed(0)
    model = TinyGPT(cfg.model, tok.vocab_size)
    optimizer = build_optimizer(cfg, 4)
    optimizer.init(model.trainable_parameters())

    def save(step):
        return ck.save_checkpoint(RUN, step, model, optimizer, cfg, tok, {"step": step})
""")


def run_script(body: str, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SETUP + textwrap.dedent(body), str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with complete checkpoints at steps 1 and 2 (written by a real save)."""
    run_dir = tmp_path_factory.mktemp("run")
    done = run_script("save(1); save(2)", run_dir)
    assert done.returncode == 0, done.stderr
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def test_truncated_file_is_refused_by_name(saved: Path, tmp_path: Path) -> None:
    run = copy_run(saved, tmp_path / "run")
    model = run / "step-0000002" / "model.safetensors"
    os.truncate(model, model.stat().st_size // 2)
    with pytest.raises(UserError, match=r"model\.safetensors is corrupt.*truncated"):
        ck.verify_checkpoint(run / "step-0000002")
    with pytest.raises(UserError, match=r"model\.safetensors"):
        ck.load_checkpoint(run / "last")
    # --resume auto falls back to the older complete checkpoint.
    assert ck.find_resume(run) == run / "step-0000001"


def test_bit_flip_is_refused_by_name(saved: Path, tmp_path: Path) -> None:
    run = copy_run(saved, tmp_path / "run")
    opt = run / "step-0000002" / "optimizer.safetensors"
    data = bytearray(opt.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    opt.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"optimizer\.safetensors is corrupt: sha256"):
        ck.verify_checkpoint(run / "step-0000002")
    assert ck.find_resume(run) == run / "step-0000001"


def test_missing_file_is_named(saved: Path, tmp_path: Path) -> None:
    run = copy_run(saved, tmp_path / "run")
    (run / "step-0000002" / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=r"tokenizer/tokenizer\.json is missing"):
        ck.verify_checkpoint(run / "step-0000002")


def test_disk_full_mid_save_keeps_previous(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(saved, tmp_path / "run")
    ckpt = ck.load_checkpoint(run)
    real_save = ck._save_arrays

    def full_disk(path: Path, arrays: dict) -> None:
        if path.name == ck.OPTIMIZER_FILE:  # the model file is already on disk by now
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(path, arrays)

    monkeypatch.setattr(ck, "_save_arrays", full_disk)
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.tokenizers import load_tokenizer
    from tinygpt_mlx.train.optim import build_optimizer

    model = TinyGPT(ckpt.cfg.model, ckpt.weights["wte.weight"].shape[0])
    optimizer = build_optimizer(ckpt.cfg, 4)
    optimizer.init(model.trainable_parameters())
    with pytest.raises(UserError, match=r"step-0000003.*No space left on device.*intact"):
        ck.save_checkpoint(run, 3, model, optimizer, ckpt.cfg, load_tokenizer(ckpt.tokenizer_dir), {"step": 3})
    assert not list(run.glob(".tmp-*"))
    assert not (run / "step-0000003").exists()
    assert (run / "last").resolve() == run / "step-0000002"
    ck.verify_checkpoint(run / "last")


def test_crash_during_save_never_exposes_partial_folder(saved: Path, tmp_path: Path) -> None:
    run = copy_run(saved, tmp_path / "run")
    # The process dies (no cleanup, no finally) just before the manifest would be written.
    crash = run_script("""
        import os
        real = ck._write_text
        def dying(path, text):
            if path.name == ck.MANIFEST:
                os._exit(9)
            real(path, text)
        ck._write_text = dying
        save(3)
    """, run)
    assert crash.returncode == 9, crash.stderr
    leftovers = list(run.glob(".tmp-*"))
    assert leftovers and (leftovers[0] / "model.safetensors").is_file()  # it really died mid-save
    assert (run / "last").resolve() == run / "step-0000002"
    assert ck.find_resume(run) == run / "step-0000002"
    # The next save cleans the stale temporary folder.
    done = run_script("save(4)", run)
    assert done.returncode == 0, done.stderr
    assert not list(run.glob(".tmp-*"))
    assert [ck.step_of(p) for p in ck.list_checkpoints(run)] == [1, 2, 4]


def test_failed_delete_only_warns(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    run = copy_run(saved, tmp_path / "run")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ck.os, "rename", refuse)
    assert ck.rotate_checkpoints(run, keep_last_k=1) == []
    assert "could not delete old checkpoint" in caplog.text and "step-0000001" in caplog.text
    assert [ck.step_of(p) for p in ck.list_checkpoints(run)] == [1, 2]
