"""Llama export: mlx-lm loads `model_type: llama` with equal logits and greedy text; transformers loads
`LlamaForCausalLM` with logits within 1e-4 and the same greedy tokens."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.generate import Generator, generate_text
from tinygpt_mlx.interop import export_checkpoint

mlx_lm = pytest.importorskip("mlx_lm")
from mlx_lm.generate import generate_step  # noqa: E402

PROMPT = "Once upon a time there was a little girl named Lily. She liked to play"
OPTIONS = [{}, {"n_kv_heads": 1}, {"tie_embeddings": False, "d_ff": 40},
           {"layer_norm_eps": 1e-6, "rope_theta": 500.0, "n_heads": 4, "n_kv_heads": 2}, {"vocab_size": 64}]
IDS = ["llama", "gqa", "untied-d_ff", "eps-theta-gqa", "padded-vocab"]


def batch(tok) -> mx.array:
    ids = tok.encode(PROMPT)[:40]
    return mx.array([ids, ids[::-1]])


def greedy_tokens(model, tok, n: int = 20) -> list[int]:
    """n greedy tokens after "Once upon", through EOS (no stop), from TinyGPT's KV-cache decoder."""
    return list(Generator(model, tok.encode("Once upon"), n, temperature=0.0))


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_mlx_lm_loads_llama_with_logit_and_greedy_parity(make_checkpoint, tmp_path, options) -> None:
    run, model, tok = make_checkpoint(arch="llama", **options)
    out = export_checkpoint(run, "mlx-lm", tmp_path / "mlx")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == model.vocab_size
    assert config["num_key_value_heads"] == (model.cfg.n_kv_heads or model.cfg.n_heads)
    assert config["tie_word_embeddings"] == model.cfg.tie_embeddings

    theirs, their_tok = mlx_lm.load(str(out))
    x = batch(tok)
    assert mx.abs(theirs(x) - model(x)).max().item() <= 1e-5
    for prompt in ("Once upon", "Lily"):  # text, stopping at EOS (random llamas often pick it early)
        ours = generate_text(model, tok, prompt, max_new_tokens=20, temperature=0)
        assert mlx_lm.generate(theirs, their_tok, prompt, max_tokens=20) == ours
    ours = greedy_tokens(model, tok)
    assert [int(t) for t, _ in generate_step(mx.array(tok.encode("Once upon")), theirs, max_tokens=20)] == ours
    assert len(set(ours)) >= 3  # varied tokens, not one repeated


@pytest.mark.parametrize("tie", [True, False])
def test_llama_weights_are_mlx_lm_and_transformers_names(make_checkpoint, tmp_path, tie) -> None:
    run, model, _ = make_checkpoint(arch="llama", tie_embeddings=tie)
    for fmt in ("mlx-lm", "hf"):
        saved = mx.load(str(export_checkpoint(run, fmt, tmp_path / fmt) / "model.safetensors"))
        assert ("lm_head.weight" in saved) == (not tie)
        assert all(k.startswith("model.") for k in saved if k != "lm_head.weight")
        np.testing.assert_array_equal(np.array(saved["model.layers.1.self_attn.k_proj.weight"]),
                                      np.array(model.layers[1].self_attn.k_proj.weight))  # [out, in], as it is


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_transformers_loads_llama_with_logit_and_greedy_parity(make_checkpoint, tmp_path, options) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    run, model, tok = make_checkpoint(arch="llama", **options)
    out = export_checkpoint(run, "hf", tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(str(out)).eval()
    assert hf.config.num_key_value_heads == (model.cfg.n_kv_heads or model.cfg.n_heads)
    x = batch(tok)
    with torch.no_grad():
        theirs = hf(torch.tensor(np.array(x))).logits.numpy()
    assert np.abs(theirs - np.array(model(x))).max() <= 1e-4

    prompt = tok.encode("Once upon")
    hf.generation_config.eos_token_id = None  # 20 tokens through EOS, as greedy_tokens does
    with torch.no_grad():
        generated = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                pad_token_id=tok.eos_id)[0, len(prompt):].tolist()
    assert generated == greedy_tokens(model, tok)
    assert transformers.AutoTokenizer.from_pretrained(str(out)).encode(PROMPT) == tok.encode(PROMPT)


def test_cli_trains_a_llama_and_its_mlx_lm_export_samples_the_same(make_config, tmp_path, cli) -> None:
    from tinygpt_mlx.config import dump_config

    cfg = make_config(tmp_path, schedule={"max_steps": 3, "warmup_steps": 1})
    dump_config(cfg, tmp_path / "tiny.yaml")
    done = cli("train", "--config", str(tmp_path / "tiny.yaml"), "-o", "model.arch=llama", "-o", "model.n_kv_heads=1")
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    exported = cli("export", "--checkpoint", str(run), "--format", "mlx-lm", "--output", str(tmp_path / "m"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_key_value_heads"] == 1
    theirs, their_tok = mlx_lm.load(str(tmp_path / "m"))
    sample = cli("sample", "--checkpoint", str(run), "--prompt", "Once", "--temperature", "0",
                 "--max-new-tokens", "12")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout == "Once" + mlx_lm.generate(theirs, their_tok, "Once", max_tokens=12) + "\n"
