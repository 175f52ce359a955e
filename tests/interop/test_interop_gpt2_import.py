"""GPT-2 import against transformers: a tiny random GPT2LMHeadModel with the real 50,257-token vocabulary.

Logits (<= 1e-4) and greedy generations are compared for each way a hub folder can hold the model:
save_pretrained's safetensors, a torch pickle, and the original hub layout (no `transformer.` prefix,
mask buffers saved alongside), with tokenizer.json or vocab.json + merges.txt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.generate import Generator, generate_text
from tinygpt_mlx.interop.hf_gpt2 import import_gpt2
from tinygpt_mlx.tokenizers.gpt2 import load_gpt2
from tinygpt_mlx.train.checkpoint import load_checkpoint, load_for_inference

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPT = "Once upon a time, there was a little girl named Lily."


def torch_bin_folder(hf_dir: Path, model, dest: Path, gpt2_bpe_dir: Path) -> Path:
    """pytorch_model.bin (state_dict, tied head included) with vocab.json + merges.txt."""
    dest.mkdir()
    shutil.copy(hf_dir / "config.json", dest / "config.json")
    torch.save(model.state_dict(), dest / "pytorch_model.bin")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_bpe_dir / name, dest / name)
    return dest


def hub_layout_folder(hf_dir: Path, model, dest: Path) -> Path:
    """The original openai-community/gpt2 file layout: bare names plus h.N.attn.bias mask buffers."""
    from safetensors.torch import save_file

    dest.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf_dir / name, dest / name)
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


@pytest.fixture(scope="module")
def variants(hf_gpt2, gpt2_bpe_dir, tmp_path_factory) -> dict[str, Path]:
    hf_dir, model = hf_gpt2
    root = tmp_path_factory.mktemp("variants")
    return {"safetensors": hf_dir,
            "torch-bin": torch_bin_folder(hf_dir, model, root / "bin", gpt2_bpe_dir),
            "hub-layout": hub_layout_folder(hf_dir, model, root / "hub")}


@pytest.mark.parametrize("variant", ["safetensors", "torch-bin", "hub-layout"])
def test_import_matches_transformers(variants, hf_gpt2, gpt2_bpe_dir, tmp_path, variant) -> None:
    _, hf = hf_gpt2
    folder = import_gpt2(variants[variant], tmp_path / "ckpt")
    assert folder.name == "step-0000000"
    model, tok, cfg, state = load_for_inference(tmp_path / "ckpt")
    assert state["step"] == 0 and tok.kind == "gpt2" and tok.vocab_size == 50257
    assert tok.fingerprint == load_gpt2(gpt2_bpe_dir).fingerprint  # so data.tokenizer=gpt2 runs accept it
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads, cfg.model.max_seq_len) == (32, 2, 2, 64)
    assert model.num_params() == sum(p.numel() for p in hf.parameters())  # tied head counted once

    ids = tok.encode(PROMPT)
    x = [ids, ids[::-1]]
    with torch.no_grad():
        theirs = hf(torch.tensor(x)).logits.numpy()
    assert np.abs(np.array(model(mx.array(x))) - theirs).max() <= 1e-4

    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_id)
    their_new = out[0, len(ids):].tolist()
    ours = list(Generator(model, ids, 16, temperature=0, eos_id=tok.eos_id))
    assert ours == their_new and len(set(ours)) > 1
    assert generate_text(model, tok, PROMPT, 16, temperature=0) == tok.decode(their_new)


def test_imported_checkpoint_is_a_normal_checkpoint(hf_gpt2, tmp_path) -> None:
    hf_dir, _ = hf_gpt2
    import_gpt2(hf_dir, tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt" / "last")
    assert ckpt.state["imported_from"]["format"] == "huggingface-gpt2"
    assert ckpt.cfg.data.tokenizer == "gpt2"
    # The config points at the checkpoint's own tokenizer, so nothing depends on the HF folder staying put.
    assert Path(ckpt.cfg.data.tokenizer_dir) == (ckpt.path / "tokenizer").resolve()
    assert ckpt.optimizer_state and all(v.size == 1 for v in ckpt.optimizer_state.values())  # fresh: step 0
    assert ckpt.cfg.model.dropout == pytest.approx(0.1)  # GPT-2's resid_pdrop, used only when training


def test_cli_import_then_sample_greedy(hf_gpt2, tmp_path, cli) -> None:
    hf_dir, hf = hf_gpt2
    done = cli("import", "gpt2", "--hf-dir", str(hf_dir), "--output", str(tmp_path / "gpt2"))
    assert done.returncode == 0, done.stderr
    sample = cli("sample", "--checkpoint", str(tmp_path / "gpt2"), "--prompt", PROMPT, "--temperature", "0",
                 "--max-new-tokens", "12")
    assert sample.returncode == 0, sample.stderr
    tok = load_gpt2(hf_dir)
    ids = tok.encode(PROMPT)
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_id)
    assert sample.stdout == PROMPT + tok.decode(out[0, len(ids):].tolist()) + "\n"


def test_fine_tune_and_eval_an_imported_gpt2(hf_gpt2, tmp_path, cli, tiny_corpus) -> None:
    hf_dir, _ = hf_gpt2
    assert cli("import", "gpt2", "--hf-dir", str(hf_dir), "--output", str(tmp_path / "gpt2")).returncode == 0
    imported_cfg = tmp_path / "gpt2" / "step-0000000" / "config.yaml"
    data = ["-o", "data.dataset=local", "-o", f"data.data_dir={tiny_corpus}", "-o", "data.max_stories=40",
            "-o", f"data.cache_dir={tmp_path / 'cache'}", "-o", "data.num_workers=1"]
    train = cli("train", "--init-from", str(tmp_path / "gpt2"), "--config", str(imported_cfg),
                "--save_dir", str(tmp_path / "ft"), "--max-steps", "2", *data,
                "-o", "data.batch_size=2", "-o", "data.block_size=32", "-o", "schedule.warmup_steps=0",
                "-o", "optim.lr=1e-3", "-o", "eval.eval_every=2", "-o", "eval.eval_subset=256",
                "-o", "eval.sample_n=0", "-o", "model.dropout=0.0", "-o", "runtime.log_interval=1")
    assert train.returncode == 0, train.stderr
    metrics = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 2 and all(np.isfinite(losses))
    tuned = load_checkpoint(tmp_path / "ft")
    assert tuned.step == 2 and tuned.vocab_size == 50257
    start = load_checkpoint(tmp_path / "gpt2").weights
    assert not np.array_equal(np.array(tuned.weights["h.0.mlp.c_fc.weight"]), np.array(start["h.0.mlp.c_fc.weight"]))

    scored = cli("eval", "--checkpoint", str(tmp_path / "gpt2"), "--output_dir", str(tmp_path / "ev"), *data,
                 "-o", "eval.eval_subset=256", "-o", "eval.sample_n=0", "-o", "data.block_size=32")
    assert scored.returncode == 0, scored.stderr
    assert (tmp_path / "ev" / "evaluation_results.csv").is_file()

    # An import holds weights only: resuming it is refused with the way out, not a traceback.
    resumed = cli("train", "--resume", str(tmp_path / "gpt2"), "--config", str(imported_cfg),
                  "--save_dir", str(tmp_path / "rs"), "--max-steps", "2", *data,
                  "-o", "schedule.warmup_steps=0")
    assert resumed.returncode == 2
    assert "holds weights only" in resumed.stderr and "--init-from" in resumed.stderr
    assert "Traceback" not in resumed.stderr


def test_seal_adapts_an_imported_gpt2(hf_gpt2, tmp_path, cli, tiny_corpus) -> None:
    import yaml

    hf_dir, _ = hf_gpt2
    assert cli("import", "gpt2", "--hf-dir", str(hf_dir), "--output", str(tmp_path / "gpt2")).returncode == 0
    seal = {"enabled": True, "rounds": 1, "k_edits": 1, "n_train_contexts": 1, "n_heldout_contexts": 1,
            "n_forget_stories": 1, "edit_max_tokens": 4, "inner_steps": [1], "ranks": [2],
            "max_context_tokens": 16, "max_target_tokens": 16, "seed": 1}
    (tmp_path / "seal.yaml").write_text(yaml.safe_dump({"seal": seal}))
    done = cli("seal", "adapt", "-c", str(tmp_path / "seal.yaml"), "--init-from", str(tmp_path / "gpt2"),
               "--run_dir", str(tmp_path / "seal"), "--data-dir", str(tiny_corpus))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "seal" / "adapt.jsonl").stat().st_size > 0


def test_padded_vocabulary_is_kept(tmp_path, gpt2_bpe_dir) -> None:
    # nanoGPT pads GPT-2's 50257 rows to 50304 for speed; the extra rows must survive the import.
    from transformers import GPT2LMHeadModel, GPT2Tokenizer

    hf_dir = tmp_path / "padded"
    torch.manual_seed(1)
    config = GPT2LMHeadModel.config_class(vocab_size=50304, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                          initializer_range=0.3)
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(str(hf_dir))
    GPT2Tokenizer.from_pretrained(str(gpt2_bpe_dir)).save_pretrained(str(hf_dir))
    import_gpt2(hf_dir, tmp_path / "ckpt")
    model, tok, cfg, _ = load_for_inference(tmp_path / "ckpt")
    assert (cfg.model.vocab_size, model.vocab_size, tok.vocab_size) == (50304, 50304, 50257)
    ids = tok.encode(PROMPT)
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits.numpy()
    assert np.abs(np.array(model(mx.array([ids]))) - theirs).max() <= 1e-4
