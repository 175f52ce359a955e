"""mlx-lm export: `mlx_lm.load` reads the folder offline; logits and greedy text equal TinyGPT's."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.errors import UserError
from tinygpt_mlx.generate import generate_text
from tinygpt_mlx.interop import export_checkpoint

mlx_lm = pytest.importorskip("mlx_lm")


def batch(tok, n: int = 2) -> mx.array:
    ids = tok.encode("Once upon a time there was a little girl named Lily. She liked to play")[:40]
    return mx.array([ids, ids[::-1]][:n])


@pytest.mark.parametrize("options", [{}, {"bias": False}, {"layer_norm_eps": 1e-6}, {"vocab_size": 64}],
                         ids=["gpt2", "no-bias", "eps", "padded-vocab"])
def test_mlx_lm_loads_with_logit_and_greedy_parity(make_checkpoint, tmp_path, options) -> None:
    run, model, tok = make_checkpoint(**options)
    out = export_checkpoint(run, "mlx-lm", tmp_path / "mlx")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["vocab_size"] == model.vocab_size
    assert config["layer_norm_epsilon"] == model.cfg.layer_norm_eps

    theirs, their_tok = mlx_lm.load(str(out))
    x = batch(tok)
    diff = mx.abs(theirs(x) - model(x)).max().item()
    assert diff <= 1e-5

    for prompt in ("Once upon", "Lily"):
        ours = generate_text(model, tok, prompt, max_new_tokens=20, temperature=0)
        text = mlx_lm.generate(theirs, their_tok, prompt, max_tokens=20)
        assert text == ours
        if "vocab_size" not in options:  # a random model picks padded ids, which decode to nothing
            assert len(ours) == 20 and len(set(ours)) >= 2  # not stopped early, not one repeated character


def test_weights_are_named_as_mlx_lm_expects(make_checkpoint, tmp_path) -> None:
    run, model, _ = make_checkpoint()
    out = export_checkpoint(run, "mlx-lm", tmp_path / "mlx")
    saved = mx.load(str(out / "model.safetensors"))
    assert all(k.startswith("model.") for k in saved)
    # Our [out, in] layout unchanged: sanitize leaves prefixed names alone.
    np.testing.assert_array_equal(np.array(saved["model.h.0.attn.c_attn.weight"]),
                                  np.array(model.h[0].attn.c_attn.weight))


@pytest.mark.parametrize(("options", "named"), [({"tie_embeddings": False}, "model.tie_embeddings"),
                                                 ({"d_ff": 96}, "MLP width of 96"),
                                                 ({"mlp_ratio": 2.0}, "MLP width of 64")])
def test_inexpressible_options_are_refused(make_checkpoint, tmp_path, options, named) -> None:
    run, _, _ = make_checkpoint(**options)
    with pytest.raises(UserError, match="cannot export .* to mlx-lm exactly") as err:
        export_checkpoint(run, "mlx-lm", tmp_path / "mlx")
    assert named in str(err.value) and "--format hf" in str(err.value)
    assert not (tmp_path / "mlx").exists()


def test_cli_export_mlx_lm_and_greedy_equals_tinygpt_sample(make_checkpoint, tmp_path, cli) -> None:
    run, model, tok = make_checkpoint()
    done = cli("export", "--checkpoint", str(run), "--format", "mlx-lm", "--output", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    theirs, their_tok = mlx_lm.load(str(tmp_path / "m"))
    x = batch(tok, 1)
    assert mx.abs(theirs(x) - model(x)).max().item() <= 1e-5
    sample = cli("sample", "--checkpoint", str(run), "--prompt", "Once", "--temperature", "0",
                 "--max-new-tokens", "24")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout == "Once" + mlx_lm.generate(theirs, their_tok, "Once", max_tokens=24) + "\n"
