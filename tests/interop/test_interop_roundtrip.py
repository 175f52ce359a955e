"""Round trips with the real GPT-2 vocabulary: HF -> TinyGPT -> HF is lossless, and -> mlx-lm matches."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.interop import export_checkpoint
from tinygpt_mlx.interop.hf_gpt2 import import_gpt2
from tinygpt_mlx.tokenizers import load_tokenizer

torch = pytest.importorskip("torch")
mlx_lm = pytest.importorskip("mlx_lm")

PROMPT = "Once upon a time, there was a little girl named Lily."


def test_hf_import_then_export_is_lossless(hf_gpt2, tmp_path) -> None:
    hf_dir, _ = hf_gpt2
    import_gpt2(hf_dir, tmp_path / "ckpt")
    out = export_checkpoint(tmp_path / "ckpt", "hf", tmp_path / "hf")
    before, after = mx.load(str(hf_dir / "model.safetensors")), mx.load(str(out / "model.safetensors"))
    assert set(before) == set(after)
    for name, value in before.items():
        np.testing.assert_array_equal(np.array(after[name]), np.array(value), err_msg=name)


def test_imported_gpt2_exported_to_mlx_lm_matches_transformers(hf_gpt2, tmp_path, cli) -> None:
    hf_dir, hf = hf_gpt2
    import_gpt2(hf_dir, tmp_path / "ckpt")
    out = export_checkpoint(tmp_path / "ckpt", "mlx-lm", tmp_path / "mlx")
    model, tokenizer = mlx_lm.load(str(out))
    ids = tokenizer.encode(PROMPT)
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits.numpy()
    assert np.abs(np.array(model(mx.array([ids]))) - theirs).max() <= 1e-4

    # Greedy text: mlx-lm == `tinygpt sample` on the imported checkpoint, leading space included.
    for prompt in (PROMPT, "Once upon a time", "Tom"):
        text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=12)
        sample = cli("sample", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", "12")
        assert sample.returncode == 0, sample.stderr
        assert sample.stdout == prompt + text + "\n"
        assert len(text) > 12  # twelve BPE tokens of real text

    # The rewrapped decoder decodes exactly as the checkpoint's tokenizer does, and still loads as ours.
    ours, exported = load_tokenizer(tmp_path / "ckpt" / "last" / "tokenizer"), load_tokenizer(out)
    ids = ours.encode(" Once upon a time,  naïve \n\n x<|endoftext|>")
    assert exported.fingerprint == ours.fingerprint and exported.decode(ids) == ours.decode(ids)
    assert tokenizer.decode(ids) == ours.decode(ids)
