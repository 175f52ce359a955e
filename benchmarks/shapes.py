"""The model-shape options every benchmark script shares (the reference shape by default)."""

from __future__ import annotations

import argparse


def shape_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with --d-model/--n-layers/--n-heads/--seq/--batch/--vocab preset to the reference shape."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--d-model", dest="d_model", type=int, default=256)
    p.add_argument("--n-layers", dest="n_layers", type=int, default=4)
    p.add_argument("--n-heads", dest="n_heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=65)
    return p
