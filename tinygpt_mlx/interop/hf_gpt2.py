"""Hugging Face GPT-2 in both directions: export a checkpoint as a GPT2LMHeadModel folder, import one.

The two layouts differ only in names and in Conv1D. HF names the body `transformer.` (the original hub
files have no prefix at all) and stores c_attn, c_proj and c_fc as Conv1D, weight [in, out], the
transpose of MLX's nn.Linear; nanoGPT's `from_pretrained` lists the same four. Every other tensor is
identical. Import checks the architecture, the key set and every shape before writing anything, so a
folder we cannot represent exactly is refused with one sentence instead of becoming a different model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx

from tinygpt_mlx.config import Config, ModelConfig, from_dict
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.interop.common import (
    GELU_TANH,
    check_vocab_rows,
    gpt2_config,
    is_conv1d,
    output_folder,
    param_shapes,
    with_zero_biases,
    write_model_folder,
)

BODY = "transformer."
HEAD = "lm_head.weight"
# Per-layer causal-mask buffers (h.N.attn.bias) that older transformers saved with the weights.
BUFFERS = ("bias", "masked_bias")
# `gelu_pytorch_tanh` is the same tanh approximation as `gelu_new`, computed by a fused torch kernel.
TANH_GELUS = (GELU_TANH, "gelu_pytorch_tanh")
SAFETENSORS, TORCH_BIN = "model.safetensors", "pytorch_model.bin"


# ---------------------------------------------------------------- export

def to_hf(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Our names and layout -> GPT2LMHeadModel's (`transformer.` prefix, Conv1D transposed)."""
    out = {}
    for name, value in weights.items():
        if name == HEAD:
            out[name] = value
        else:
            out[BODY + name] = value.T if is_conv1d(name) else value
    return out


def export_hf(ckpt: Any, tokenizer: Any, output: str | Path) -> Path:
    """Write a GPT2LMHeadModel folder (config.json, model.safetensors, tokenizer files) for a GPT-2 ckpt."""
    cfg = ckpt.cfg.model
    # HF's GPT-2 always has biases; zeros reproduce bias = false exactly. Everything else maps one to one.
    weights = with_zero_biases(cfg, ckpt.vocab_size, ckpt.weights) if not cfg.bias else ckpt.weights
    with output_folder(output) as tmp:
        # transformers refuses safetensors whose metadata format is not "pt" (or tf/flax/mlx).
        config = gpt2_config(cfg, ckpt.vocab_size, tokenizer.eos_id)
        write_model_folder(tmp, to_hf(weights), config, tokenizer, "pt")
    return Path(output)


# ---------------------------------------------------------------- import: config

def read_hf_config(hf_dir: Path) -> dict[str, Any]:
    """config.json of an HF folder, or a UserError naming what is missing."""
    path = hf_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{hf_dir} is not a Hugging Face model folder: config.json is missing")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object")
    return raw


def model_section(raw: dict[str, Any], where: Path) -> dict[str, Any]:
    """Our `model` config section for an HF GPT-2 config; every option we cannot express is an error."""
    if raw.get("model_type") != "gpt2":
        raise UserError(f"{where} has model_type {raw.get('model_type')!r}; only GPT-2 (model_type 'gpt2') "
                        "can be imported")
    missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in raw]
    if "n_positions" not in raw and "n_ctx" not in raw:
        missing.append("n_positions")
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    problems = []
    act = raw.get("activation_function", GELU_TANH)
    if act not in TANH_GELUS:
        problems.append(f"activation_function {act!r} (TinyGPT uses the tanh GELU, 'gelu_new')")
    # Defaults are GPT2Config's, so a config.json that leaves an option out means GPT-2's behaviour.
    for key, ours in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if bool(raw.get(key, ours)) != ours:
            problems.append(f"{key} = {str(raw[key]).lower()} (TinyGPT supports only {str(ours).lower()})")
    if problems:
        raise UserError(f"unsupported GPT-2 option in {where}: {'; '.join(problems)}")
    for key in ("n_embd", "n_layer", "n_head", "vocab_size", "n_positions", "n_ctx", "n_inner",
                "layer_norm_epsilon", "resid_pdrop"):
        if raw.get(key) is not None and (isinstance(raw[key], bool) or not isinstance(raw[key], (int, float))):
            raise UserError(f"{where}: {key} must be a number, got {raw[key]!r}")
    n_embd, n_head = int(raw["n_embd"]), int(raw["n_head"])
    if n_head <= 0 or n_embd % n_head:
        raise UserError(f"{where}: n_embd ({n_embd}) is not divisible by n_head ({n_head})")
    return {
        "d_model": n_embd, "n_layers": int(raw["n_layer"]), "n_heads": n_head,
        "max_seq_len": int(raw.get("n_positions", raw.get("n_ctx"))),
        "d_ff": int(raw["n_inner"]) if raw.get("n_inner") else None,
        "layer_norm_eps": float(raw.get("layer_norm_epsilon", 1e-5)),
        "tie_embeddings": bool(raw.get("tie_word_embeddings", True)),
        "dropout": float(raw.get("resid_pdrop", 0.1)),  # GPT-2's; only training uses it
        "bias": True,
    }


# ---------------------------------------------------------------- import: weights

def _weight_files(hf_dir: Path) -> list[Path]:
    """The weight files of an HF folder: single or sharded safetensors, else single or sharded .bin."""
    for single in (SAFETENSORS, TORCH_BIN):
        if (hf_dir / single).is_file():
            return [hf_dir / single]
        index = hf_dir / f"{single}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError, UnicodeDecodeError):
                raise UserError(f"{index} is not a valid weight index (no weight_map)") from None
            absent = [s for s in shards if not (hf_dir / s).is_file()]
            if absent:
                raise UserError(f"{index} names shard {absent[0]}, which is missing from {hf_dir}")
            return [hf_dir / s for s in shards]
    raise UserError(f"no weights in {hf_dir}: expected {SAFETENSORS} or {TORCH_BIN} (or a sharded index)")


def _read_torch_bin(path: Path) -> dict[str, mx.array]:
    try:
        import torch
    except ImportError:
        raise UserError(f"reading {path.name} needs PyTorch (pip install -e '.[torch]'); "
                        f"or convert {path.parent} to {SAFETENSORS}") from None
    try:
        # weights_only: a .bin is a pickle, and a pickle from the internet must not run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or hostile pickle
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    return {k: mx.array(v.detach().float().numpy()) for k, v in state.items() if hasattr(v, "numpy")}


def read_hf_weights(hf_dir: Path) -> dict[str, mx.array]:
    """Every tensor of an HF folder's weight files, as float32 MLX arrays."""
    tensors: dict[str, mx.array] = {}
    for path in _weight_files(hf_dir):
        if path.suffix == ".safetensors":
            try:
                part = mx.load(str(path))
            except (RuntimeError, ValueError) as err:
                raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
        else:
            part = _read_torch_bin(path)
        tensors.update({k: v.astype(mx.float32) for k, v in part.items()})
    return tensors


def _is_buffer(name: str) -> bool:
    """True for h.N.attn.bias / h.N.attn.masked_bias (not h.N.attn.c_attn.bias, a real parameter)."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-2] == "attn" and parts[-1] in BUFFERS


def from_hf(tensors: dict[str, mx.array], cfg: ModelConfig, vocab: int, where: Path) -> dict[str, mx.array]:
    """HF GPT-2 tensors -> TinyGPT weights, checking the key set and every shape (as nanoGPT asserts)."""
    expected = param_shapes(cfg, vocab)
    found: dict[str, tuple[str, mx.array]] = {}  # our name -> (name in the file, tensor)
    for hf_name in sorted(tensors):
        name = hf_name.removeprefix(BODY)
        if _is_buffer(name) or (name == HEAD and HEAD not in expected):
            continue  # mask buffers; a tied head saved anyway (transformers ties it to wte on load too)
        if name not in expected:
            raise UserError(f"unexpected weight {hf_name} in {where} (not part of a GPT-2 with this config.json)")
        found[name] = (hf_name, tensors[hf_name])
    missing = [n for n in expected if n not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{where} is missing weight {missing[0]}{more}")
    weights = {}
    for name, shape in expected.items():  # model order, so the first wrong shape reported is the earliest
        hf_name, value = found[name]
        # Compare in the file's own layout, so the message shows the shapes the user can see.
        want = shape[::-1] if is_conv1d(name) else shape
        if tuple(value.shape) != want:
            raise UserError(f"weight {hf_name} in {where} has shape {list(value.shape)}, but config.json "
                            f"implies {list(want)}")
        weights[name] = value.T if is_conv1d(name) else value
    return weights


# ---------------------------------------------------------------- import: the whole folder

def import_gpt2(hf_dir: str | Path, output: str | Path) -> Path:
    """Import an HF GPT-2 folder as a step-0 TinyGPT checkpoint in run folder output; returns the step folder."""
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.tokenizers.gpt2 import load_gpt2
    from tinygpt_mlx.train.checkpoint import save_checkpoint, step_dir_name, step_folders
    from tinygpt_mlx.train.optim import build_optimizer

    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise UserError(f"--hf-dir {hf_dir} is not a folder")
    raw = read_hf_config(hf_dir)
    model = model_section(raw, hf_dir / "config.json")
    if not (hf_dir / "tokenizer.json").is_file() and not all((hf_dir / f).is_file()
                                                              for f in ("vocab.json", "merges.txt")):
        raise UserError(f"no tokenizer in {hf_dir}: need tokenizer.json, or vocab.json and merges.txt")
    tokenizer = load_gpt2(hf_dir)
    tensors = read_hf_weights(hf_dir)
    wte = tensors.get(BODY + "wte.weight", tensors.get("wte.weight"))
    if wte is not None and wte.shape[0] != int(raw["vocab_size"]):
        raise UserError(f"vocabulary mismatch in {hf_dir}: config.json says vocab_size {raw['vocab_size']} but "
                        f"the wte embedding has {wte.shape[0]} rows")
    check_vocab_rows(int(raw["vocab_size"]), tokenizer.vocab_size, str(hf_dir))
    weights = from_hf(tensors, ModelConfig(**model), int(raw["vocab_size"]), hf_dir)

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the imported checkpoint")
    if step_folders(output):
        raise UserError(f"{output} already holds checkpoints; import into a new folder")
    cfg = imported_config(model, int(raw["vocab_size"]), tokenizer.vocab_size,
                          output / step_dir_name(0) / "tokenizer")
    net = TinyGPT(cfg.model, int(raw["vocab_size"]))
    net.load_weights(list(weights.items()), strict=True)
    # A fresh optimizer (no moments yet): --init-from fine-tuning starts its own anyway.
    optimizer = build_optimizer(cfg, cfg.schedule.max_steps or 1)
    state = {"step": 0, "tokens_seen": 0, "elapsed_s": 0.0,
             "imported_from": {"format": "huggingface-gpt2", "path": str(hf_dir.resolve())}}
    return save_checkpoint(output, 0, net, optimizer, cfg, tokenizer, state)


def imported_config(model: dict[str, Any], vocab: int, tokenizer_vocab: int, tokenizer_dir: Path) -> Config:
    """The config an imported checkpoint carries: the GPT-2 architecture and its own GPT-2 tokenizer."""
    section = dict(model)
    if vocab != tokenizer_vocab:  # a padded vocabulary (e.g. 50304) must survive a round trip
        section["vocab_size"] = vocab
    # data.tokenizer_dir points at the checkpoint's own tokenizer/, so eval and fine-tuning need no HF folder.
    return from_dict({"model": section, "data": {"tokenizer": "gpt2", "tokenizer_dir": str(tokenizer_dir.resolve()),
                                                 "block_size": min(256, section["max_seq_len"])}})
