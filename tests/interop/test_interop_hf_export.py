"""HF export: transformers loads the folder as GPT2LMHeadModel with logit parity, tokenizer included."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.interop import export_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = "Once upon a time there was a little girl named Lily. She liked to play"


@pytest.mark.parametrize("options", [{}, {"bias": False}, {"tie_embeddings": False}, {"d_ff": 48},
                                     {"layer_norm_eps": 1e-6, "vocab_size": 64}],
                         ids=["gpt2", "no-bias", "untied", "d_ff", "eps-padded"])
def test_transformers_loads_with_logit_parity(make_checkpoint, tmp_path, options) -> None:
    run, model, tok = make_checkpoint(**options)
    out = export_checkpoint(run, "hf", tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["activation_function"] == "gelu_new" and config["n_embd"] == 32
    assert config["tie_word_embeddings"] == model.cfg.tie_embeddings

    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    assert hf.config.n_inner in (None, model.cfg.hidden_dim)
    ids = tok.encode(PROMPT)[:48]  # within max_seq_len 64
    x = [ids, ids[::-1]]
    with torch.no_grad():
        theirs = hf(torch.tensor(x)).logits.numpy()
    ours = np.array(model(mx.array(x)))
    assert np.abs(theirs - ours).max() <= 1e-4

    # The tokenizer files load in transformers and tokenize as we do.
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok.encode(PROMPT) == tok.encode(PROMPT)
    assert hf_tok.eos_token_id == tok.eos_id


def test_hf_names_and_conv1d_layout(make_checkpoint, tmp_path) -> None:
    run, model, _ = make_checkpoint()
    out = export_checkpoint(run, "hf", tmp_path / "hf")
    saved = mx.load(str(out / "model.safetensors"))
    assert all(k.startswith("transformer.") for k in saved)  # tied: no lm_head.weight
    c_fc = np.array(model.h[1].mlp.c_fc.weight)  # [out, in] = [128, 32]
    np.testing.assert_array_equal(np.array(saved["transformer.h.1.mlp.c_fc.weight"]), c_fc.T)
    np.testing.assert_array_equal(np.array(saved["transformer.wte.weight"]), np.array(model.wte.weight))


def test_cli_export_hf_and_refuses_a_used_folder(make_checkpoint, tmp_path, cli) -> None:
    run, _, _ = make_checkpoint()
    out = tmp_path / "hf"
    done = cli("export", "--checkpoint", str(run), "--format", "hf", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").is_file()
    again = cli("export", "--checkpoint", str(run), "--format", "hf", "--output", str(out))
    assert again.returncode == 2 and "not an empty folder" in again.stderr
    assert "Traceback" not in again.stderr
