"""Interop: export checkpoints to mlx-lm and Hugging Face GPT-2, import Hugging Face GPT-2 checkpoints."""

from __future__ import annotations

from pathlib import Path

from tinygpt_mlx.errors import UserError

EXPORT_FORMATS = ("mlx-lm", "hf")


def export_checkpoint(checkpoint: str | Path, fmt: str, output: str | Path) -> Path:
    """Write checkpoint as a model folder of format fmt (`mlx-lm` or `hf`) at output."""
    if fmt == "mlx-lm":
        from tinygpt_mlx.interop.mlx_lm import export_mlx_lm

        return export_mlx_lm(checkpoint, output)
    if fmt == "hf":
        from tinygpt_mlx.interop.hf_gpt2 import export_hf

        return export_hf(checkpoint, output)
    raise UserError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
