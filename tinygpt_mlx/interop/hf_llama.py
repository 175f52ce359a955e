"""Llama-style TinyGPT as a Hugging Face `LlamaForCausalLM` folder, and the config and names mlx-lm shares.

Our llama parameter names are transformers' and mlx-lm's own without the `model.` prefix of the decoder
body (`embed_tokens`, `layers.N.self_attn.q_proj`, `layers.N.mlp.gate_proj`, `norm`), and all three store
Linear weights as [out, in], so an export only adds that prefix (`lm_head` sits outside the body in all
three). RoPE is the non-interleaved form (`mx.fast.rope(traditional=False)`), which is what transformers'
`rotate_half` computes; every option of the llama arch (GQA, an untied head, any MLP width, RMSNorm
epsilon, RoPE base) has a config.json key, so nothing is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.interop.common import output_folder, write_model_folder

BODY = "model."
HEAD = "lm_head.weight"


def llama_config(cfg: ModelConfig, vocab_size: int, eos_id: int) -> dict[str, Any]:
    """A Hugging Face LlamaConfig dict for cfg (mlx-lm's llama ModelArgs reads the same keys)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads or cfg.n_heads,
        "head_dim": cfg.d_model // cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.layer_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        # TinyGPT never drops out attention probabilities; its residual dropout has no HF key (training only).
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }


def llama_weights(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Our llama names -> transformers' and mlx-lm's: the body under `model.`, the head as it is."""
    return {(name if name == HEAD else BODY + name): value for name, value in weights.items()}


def export_hf_llama(ckpt: Any, tokenizer: Any, output: str | Path) -> Path:
    """Write a LlamaForCausalLM folder (config.json, model.safetensors, tokenizer files) for a llama ckpt."""
    with output_folder(output) as tmp:
        config = llama_config(ckpt.cfg.model, ckpt.vocab_size, tokenizer.eos_id)
        # transformers refuses safetensors whose metadata format is not "pt" (or tf/flax/mlx).
        write_model_folder(tmp, llama_weights(ckpt.weights), config, tokenizer, "pt")
    return Path(output)
