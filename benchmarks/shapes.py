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


def product_step(args: argparse.Namespace, batch: int, cpu_threads: int, precision: str = "float32",
                 accelerated: bool = True):
    """(cfg, model, step) at these shapes, as `tinygpt train` builds them (seed 0); `accelerated` False skips
    the CPU seam (cpu.accelerate), leaving train/step.py's TrainStep on the plain model."""
    import mlx.core as mx

    from tinygpt_mlx.config import Config, ModelConfig
    from tinygpt_mlx.cpu import accelerate
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.train.optim import build_optimizer
    from tinygpt_mlx.train.step import make_train_step

    cfg = Config()
    cfg.model = ModelConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, max_seq_len=args.seq)
    cfg.data.batch_size = batch
    cfg.runtime.cpu_threads = cpu_threads
    cfg.runtime.precision = precision
    cfg.schedule.warmup_steps = 0
    mx.random.seed(0)
    model = TinyGPT(cfg.model, args.vocab)
    step = make_train_step(model, build_optimizer(cfg, 10_000), cfg)
    if accelerated:
        model, step = accelerate(model, step, cfg)
    return cfg, model, step
