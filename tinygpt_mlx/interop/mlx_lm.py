"""Export a checkpoint as an mlx-lm `gpt2` or `llama` model folder that `mlx_lm.load(DIR)` reads as it is.

mlx-lm's gpt2 (mlx_lm/models/gpt2.py) is TinyGPT with three things fixed: the output head is tied to
`wte`, the MLP is 4 x n_embd wide, and every Linear and LayerNorm has a bias. Its `sanitize` transposes
Conv1D weights only when they arrive without the `model.` prefix (Hugging Face files), so we write every
weight as `model.<our name>` in MLX's own [out, in] layout and sanitize passes them through untouched.
mlx-lm's llama expresses every option of our llama arch and reads the Hugging Face folder (hf_llama.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.interop.common import gpt2_config, output_folder, with_zero_biases, write_model_folder
from tinygpt_mlx.interop.hf_llama import llama_config, llama_weights

PREFIX = "model."  # mlx-lm's gpt2.Model holds the GPT-2 body as `self.model`


def mlx_lm_problems(cfg: ModelConfig) -> list[str]:
    """Options of cfg that mlx-lm's gpt2 cannot express exactly (empty when the export is exact)."""
    problems = []
    if not cfg.tie_embeddings:
        problems.append("model.tie_embeddings = false (mlx-lm's gpt2 always ties the output head to wte)")
    if cfg.hidden_dim != 4 * cfg.d_model:
        problems.append(f"model.d_ff / mlp_ratio give an MLP width of {cfg.hidden_dim} "
                        f"(mlx-lm's gpt2 is fixed at 4 x d_model = {4 * cfg.d_model})")
    # bias = false is expressible: zero biases compute exactly the same function (see with_zero_biases).
    # layer_norm_eps is expressible: mlx-lm reads layer_norm_epsilon from config.json.
    return problems


def export_mlx_lm(ckpt: Any, tokenizer: Any, output: str | Path) -> Path:
    """Write config.json, model.safetensors and the tokenizer files of a loaded ckpt into the folder output."""
    cfg = ckpt.cfg.model
    if cfg.arch == "llama":
        weights, config = llama_weights(ckpt.weights), llama_config(cfg, ckpt.vocab_size, tokenizer.eos_id)
    else:
        problems = mlx_lm_problems(cfg)
        if problems:
            raise UserError(f"cannot export {ckpt.path} to mlx-lm exactly: {'; '.join(problems)}; "
                            "use --format hf, whose GPT-2 expresses these")
        weights = with_zero_biases(cfg, ckpt.vocab_size, ckpt.weights) if not cfg.bias else ckpt.weights
        weights = {PREFIX + k: v for k, v in weights.items()}
        config = gpt2_config(cfg, ckpt.vocab_size, tokenizer.eos_id)
    with output_folder(output) as tmp:
        write_model_folder(tmp, weights, config, tokenizer, "mlx")
        exact_text_decoder(tmp / "tokenizer.json")
    return Path(output)


def exact_text_decoder(tokenizer_json: Path) -> None:
    """Wrap a bare ByteLevel decoder in a one-element Sequence, so mlx-lm's generated text is exact."""
    # mlx-lm streams a bare ByteLevel decoder through its BPEStreamingDetokenizer, which drops the leading
    # space of every completion ("Tom" + " Closed" prints as "TomClosed"). The wrapped decoder decodes
    # byte for byte the same, and mlx-lm then falls back to tokenizer.decode, which keeps the space.
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    if (spec.get("decoder") or {}).get("type") == "ByteLevel":
        spec["decoder"] = {"type": "Sequence", "decoders": [spec["decoder"]]}
        tokenizer_json.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
