"""Checkpoint folders: round trip of weights and optimizer state; links; rotation; readers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx.config import from_dict
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.tokenizers.char import train_char
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.state import capture_rng
from tinygpt_mlx.train.step import make_train_step

TEXT = "Once upon a time there was a tiny model.\n"


def tiny_setup(seed: int = 0):
    """A two-layer model, its optimizer after two real steps, a config and a char tokenizer."""
    cfg = from_dict({"model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 16},
                     "data": {"block_size": 16, "batch_size": 2}, "schedule": {"max_steps": 10, "warmup_steps": 2}})
    tok = train_char([TEXT])
    mx.random.seed(seed)
    model = TinyGPT(cfg.model, tok.vocab_size)
    optimizer = build_optimizer(cfg, 10)
    step = make_train_step(model, optimizer, cfg)
    ids = mx.array([tok.encode(TEXT)[:17]] * 2)
    for _ in range(2):
        mx.eval(step.state, step(ids[:, :-1], ids[:, 1:]))
    return cfg, tok, model, optimizer


def save(run_dir: Path, step: int, setup=None) -> Path:
    cfg, tok, model, optimizer = setup or tiny_setup()
    return ck.save_checkpoint(run_dir, step, model, optimizer, cfg, tok, {"step": step, "rng": capture_rng()})


def test_folder_layout_and_manifest(tmp_path: Path) -> None:
    folder = save(tmp_path, 5)
    assert folder == tmp_path / "step-0000005"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert {"model.safetensors", "optimizer.safetensors", "state.json", "config.yaml", "manifest.json",
            "tokenizer/tokenizer.json"} <= set(names)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["step"] == 5
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    assert manifest["files"]["state.json"]["bytes"] == (folder / "state.json").stat().st_size
    assert (tmp_path / "last").resolve() == folder
    assert not list(tmp_path.glob(".tmp-*"))


def test_round_trip_is_exact(tmp_path: Path) -> None:
    setup = tiny_setup()
    cfg, tok, model, optimizer = setup
    save(tmp_path, 2, setup)
    ckpt = ck.load_checkpoint(tmp_path)  # a run folder means its `last`
    assert ckpt.step == 2 and ckpt.cfg == cfg
    for k, v in tree_flatten(model.parameters()):
        assert mx.array_equal(ckpt.weights[k], v).item(), k
    saved_opt = dict(tree_flatten(optimizer.state))
    assert ckpt.optimizer_state.keys() == saved_opt.keys()
    assert ckpt.optimizer_state["states.0.step"].item() == 2

    fresh = build_optimizer(cfg, 10)
    ckpt.restore_optimizer(fresh)
    for k, v in tree_flatten(fresh.state):
        assert v.dtype == saved_opt[k].dtype and mx.array_equal(v, saved_opt[k]).item(), k

    loaded, tok2, cfg2, state = ck.load_for_inference(tmp_path / "last")
    assert tok2.fingerprint == tok.fingerprint and cfg2 == cfg and state["step"] == 2
    assert not loaded.training
    x = mx.array([tok.encode("Once")])
    model.eval()
    assert mx.array_equal(loaded(x), model(x)).item()


def test_same_step_saved_twice_replaces_folder(tmp_path: Path) -> None:
    save(tmp_path, 3)
    folder = save(tmp_path, 3)
    ck.verify_checkpoint(folder)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-0000003"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_list_and_find_resume_skip_incomplete(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    setup = tiny_setup()
    for step in (10, 20, 30):
        save(tmp_path, step, setup)
    (tmp_path / "step-0000030" / "manifest.json").unlink()  # as if the manifest never got written
    (tmp_path / "step-0000040").mkdir()  # a stray folder with nothing in it
    with caplog.at_level(logging.WARNING):
        found = ck.list_checkpoints(tmp_path)
    assert [ck.step_of(p) for p in found] == [10, 20]
    assert "step-0000030" in caplog.text and "manifest.json is missing" in caplog.text
    assert ck.find_resume(tmp_path) == tmp_path / "step-0000020"
    assert ck.find_resume(tmp_path / "empty") is None


def test_resolve_accepts_folder_link_and_run_dir(tmp_path: Path) -> None:
    first = save(tmp_path, 1)
    ck.update_link(tmp_path, "best", first)
    second = save(tmp_path, 2)
    assert ck.resolve_checkpoint(tmp_path) == second
    assert ck.resolve_checkpoint(tmp_path / "best") == first
    assert ck.resolve_checkpoint(first) == first
    assert Path.readlink(tmp_path / "best") == Path("step-0000001")  # relative: the run folder can move
    with pytest.raises(UserError, match="not found"):
        ck.resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        ck.resolve_checkpoint(tmp_path / "other")


def test_rotation_keeps_newest_k_and_best(tmp_path: Path) -> None:
    setup = tiny_setup()
    folders = [save(tmp_path, s, setup) for s in (100, 200, 300, 400, 500)]
    ck.update_link(tmp_path, "best", folders[0])
    deleted = ck.rotate_checkpoints(tmp_path, keep_last_k=2)
    assert [p.name for p in deleted] == ["step-0000200", "step-0000300"]
    assert [ck.step_of(p) for p in ck.list_checkpoints(tmp_path)] == [100, 400, 500]
    # keep_last_k 0 still keeps the newest (and best).
    ck.rotate_checkpoints(tmp_path, keep_last_k=0)
    assert [ck.step_of(p) for p in ck.list_checkpoints(tmp_path)] == [100, 500]
    assert (tmp_path / "last").resolve() == folders[-1]
