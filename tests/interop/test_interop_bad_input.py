"""Bad input to import and export: each a one-line UserError naming what is wrong; exit 2 from the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.interop import export_checkpoint
from tinygpt_mlx.interop.hf_gpt2 import import_gpt2

pytest.importorskip("transformers")


@pytest.fixture
def broken(hf_gpt2, tmp_path) -> Callable[..., Path]:
    """broken(config=..., drop=[files], weights=fn) -> a copy of the tiny HF folder with one thing wrong."""
    hf_dir, _ = hf_gpt2

    def make(config: dict | None = None, drop: tuple[str, ...] = (), weights: Callable | None = None) -> Path:
        dest = tmp_path / "hf"
        shutil.copytree(hf_dir, dest)
        if config:
            raw = json.loads((dest / "config.json").read_text())
            raw.update(config)
            (dest / "config.json").write_text(json.dumps(raw))
        for name in drop:
            (dest / name).unlink()
        if weights:
            tensors = weights(mx.load(str(dest / "model.safetensors")))
            mx.save_safetensors(str(dest / "model.safetensors"), tensors, metadata={"format": "pt"})
        return dest

    return make


def refused(folder: Path, tmp_path: Path, *needles: str) -> str:
    with pytest.raises(UserError) as err:
        import_gpt2(folder, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    assert not (tmp_path / "out").exists()  # nothing is written before every check has passed
    return message


def test_missing_files(broken, tmp_path) -> None:
    refused(tmp_path / "nowhere", tmp_path, "is not a folder")
    folder = broken(drop=("config.json",))
    refused(folder, tmp_path, "config.json is missing")


def test_missing_weights(broken, tmp_path) -> None:
    refused(broken(drop=("model.safetensors",)), tmp_path, "no weights in", "model.safetensors or pytorch_model.bin")


def test_missing_tokenizer(broken, tmp_path) -> None:
    refused(broken(drop=("tokenizer.json",)), tmp_path, "no tokenizer in", "vocab.json and merges.txt")


def test_not_gpt2(broken, tmp_path) -> None:
    refused(broken(config={"model_type": "llama"}), tmp_path, "model_type 'llama'", "only GPT-2")


@pytest.mark.parametrize(("option", "named"), [
    ({"activation_function": "relu"}, "activation_function 'relu'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx = true"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn = true"),
    ({"scale_attn_weights": False}, "scale_attn_weights = false"),
    ({"add_cross_attention": True}, "add_cross_attention = true"),
])
def test_unsupported_gpt2_options(broken, tmp_path, option, named) -> None:
    refused(broken(config=option), tmp_path, "unsupported GPT-2 option", named)


def test_all_unsupported_options_reported_together(broken, tmp_path) -> None:
    message = refused(broken(config={"activation_function": "gelu", "reorder_and_upcast_attn": True}), tmp_path)
    assert "activation_function 'gelu'" in message and "reorder_and_upcast_attn" in message


def test_vocab_size_disagrees_with_embedding(broken, tmp_path) -> None:
    refused(broken(config={"vocab_size": 50304}), tmp_path, "vocabulary mismatch", "vocab_size 50304",
            "50257 rows")


def test_tokenizer_larger_than_embedding(tmp_path, gpt2_bpe_dir) -> None:
    from tinygpt_mlx.tokenizers.gpt2 import load_gpt2

    folder = tmp_path / "small-vocab"
    _random_hf(folder, vocab_size=1000)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_bpe_dir / name, folder / name)
    assert load_gpt2(folder).vocab_size == 50257
    refused(folder, tmp_path, "vocabulary mismatch", "50257 tokens", "only 1000 rows")


def _random_hf(dest: Path, **config: object) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=16, **config)).save_pretrained(dest)


def test_missing_unexpected_and_misshapen_weights(broken, tmp_path) -> None:
    def drop(t):
        return {k: v for k, v in t.items() if k != "transformer.ln_f.bias"}

    refused(broken(weights=drop), tmp_path, "missing weight ln_f.bias")
    shutil.rmtree(tmp_path / "hf")
    refused(broken(weights=lambda t: {**t, "transformer.h.0.attn.q_proj.weight": mx.zeros((2, 2))}), tmp_path,
            "unexpected weight transformer.h.0.attn.q_proj.weight")
    shutil.rmtree(tmp_path / "hf")
    refused(broken(config={"n_inner": 64}), tmp_path, "transformer.h.0.mlp.c_fc.weight", "[32, 128]",
            "config.json implies [32, 64]")


def test_corrupt_weights(broken, tmp_path) -> None:
    folder = broken()
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    refused(folder, tmp_path, "cannot read", "model.safetensors")


def test_output_with_checkpoints_is_refused(hf_gpt2, tmp_path) -> None:
    hf_dir, _ = hf_gpt2
    import_gpt2(hf_dir, tmp_path / "out")
    with pytest.raises(UserError, match="already holds checkpoints"):
        import_gpt2(hf_dir, tmp_path / "out")


def test_export_errors(make_checkpoint, tmp_path) -> None:
    run, _, _ = make_checkpoint()
    with pytest.raises(UserError, match="--format 'onnx' is not one of mlx-lm, hf"):
        export_checkpoint(run, "onnx", tmp_path / "x")
    with pytest.raises(UserError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "missing", "hf", tmp_path / "x")


@pytest.mark.parametrize("case", ["model_type", "missing-dir", "untied-mlx-lm", "bad-format"])
def test_cli_bad_input_exits_2_with_one_line(broken, make_checkpoint, tmp_path, cli, case) -> None:
    if case == "model_type":
        args = ["import", "gpt2", "--hf-dir", str(broken(config={"model_type": "gpt_neox"})),
                "--output", str(tmp_path / "o")]
        needle = "model_type 'gpt_neox'"
    elif case == "missing-dir":
        args = ["import", "gpt2", "--hf-dir", str(tmp_path / "none"), "--output", str(tmp_path / "o")]
        needle = "is not a folder"
    elif case == "untied-mlx-lm":
        run, _, _ = make_checkpoint(tie_embeddings=False)
        args = ["export", "--checkpoint", str(run), "--format", "mlx-lm", "--output", str(tmp_path / "o")]
        needle = "model.tie_embeddings = false"
    else:
        run, _, _ = make_checkpoint()
        args = ["export", "--checkpoint", str(run), "--format", "gguf", "--output", str(tmp_path / "o")]
        needle = "--format 'gguf'"
    done = cli(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and needle in " ".join(done.stderr.split())
    assert not (tmp_path / "o").exists()
