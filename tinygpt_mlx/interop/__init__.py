"""Interop: export checkpoints to mlx-lm and Hugging Face (GPT-2 or Llama); import Hugging Face GPT-2."""

from __future__ import annotations

from pathlib import Path

from tinygpt_mlx.errors import UserError

EXPORT_FORMATS = ("mlx-lm", "hf")


def export_checkpoint(checkpoint: str | Path, fmt: str, output: str | Path) -> Path:
    """Write checkpoint as a model folder of format fmt (`mlx-lm` or `hf`) at output."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    from tinygpt_mlx.interop.common import load_export_source

    ckpt, tokenizer = load_export_source(checkpoint)
    if fmt == "mlx-lm":
        from tinygpt_mlx.interop.mlx_lm import export_mlx_lm

        return export_mlx_lm(ckpt, tokenizer, output)
    if ckpt.cfg.model.arch == "llama":
        from tinygpt_mlx.interop.hf_llama import export_hf_llama

        return export_hf_llama(ckpt, tokenizer, output)
    from tinygpt_mlx.interop.hf_gpt2 import export_hf

    return export_hf(ckpt, tokenizer, output)
