"""A tiny corpus and checkpoints whose logits are known in closed form, so every score can be checked by hand.

With ln_f's weight at zero, LayerNorm outputs its bias b at every position whatever the input, so the
(tied) head gives the same logits c = wte @ b everywhere: the loss on a target t is logsumexp(c) - c[t].
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from tinygpt_mlx.config import Config, from_dict
from tinygpt_mlx.data.prepare import prepare_data
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train import checkpoint as ck
from tinygpt_mlx.train.metrics import MetricsLog
from tinygpt_mlx.train.optim import build_optimizer

T = 8
SEP = "\n<|endoftext|>\n"
TRAIN = ["Once upon a time a cat sat.", "The dog ran to the café.", "Tom saw a big red ball!",
         "Sue had a hat; it was blue."]
VALID = ["A cat ran to the café.", "Tom had a red hat.", "The dog sat. Sue saw it!"]
STEPS = (3, 6)


def write_corpus(folder: Path, train: list[str], valid: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(SEP.join(train), encoding="utf-8")
    (folder / "valid.txt").write_text(SEP.join(valid), encoding="utf-8")
    return folder


def tiny_config(corpus: Path, cache: Path, run: Path) -> Config:
    return from_dict({
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": T},
        "data": {"dataset": "local", "data_dir": str(corpus), "block_size": T, "batch_size": 4,
                 "cache_dir": str(cache), "num_workers": 1},
        "schedule": {"max_steps": 10, "warmup_steps": 1},
        "eval": {"eval_subset": 4 * T, "sample_n": 2, "sample_max_new_tokens": 12, "sample_prompt": "Tom"},
        "checkpoint": {"save_dir": str(run)},
        "runtime": {"seed": 5},
    })


def controlled_model(cfg: Config, vocab: int, seed: int) -> TinyGPT:
    """A model whose logits are c = wte @ b at every position (see the module docstring)."""
    mx.random.seed(seed)
    model = TinyGPT(cfg.model, vocab)
    model.wte.weight = 0.3 * mx.random.normal((vocab, cfg.model.d_model))  # logits of std ~1: varied samples
    model.ln_f.weight = mx.zeros((cfg.model.d_model,))
    model.ln_f.bias = mx.random.normal((cfg.model.d_model,))
    mx.eval(model.parameters())
    return model


def logits_of(folder: Path) -> np.ndarray:
    """c = wte @ b of a saved controlled model, computed in float64 with numpy."""
    weights = mx.load(str(folder / ck.MODEL_FILE))
    wte = np.array(weights["wte.weight"], dtype=np.float64)
    return wte @ np.array(weights["ln_f.bias"], dtype=np.float64)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """A run folder with checkpoints at STEPS (controlled models) and a metrics.jsonl."""
    root = tmp_path_factory.mktemp("eval_run")
    cfg = tiny_config(write_corpus(root / "corpus", TRAIN, VALID), root / "cache", root / "run")
    tok = prepare_data(cfg).tokenizer
    run = Path(cfg.checkpoint.save_dir)
    log = MetricsLog(run)
    for i, step in enumerate(STEPS):
        model = controlled_model(cfg, tok.vocab_size, seed=i)
        optimizer = build_optimizer(cfg, 10)
        optimizer.init(model.trainable_parameters())
        ck.save_checkpoint(run, step, model, optimizer, cfg, tok, {"step": step, "tokens_seen": step * 4 * T})
    for step in range(1, STEPS[-1] + 1):
        log.write("train", step=step, tokens_seen=step * 4 * T, loss=4.0 - 0.1 * step,
                  lr=1e-3 * min(step, 2) / 2)
        if step in STEPS:
            log.write("eval", step=step, tokens_seen=step * 4 * T, val_loss=4.1 - 0.1 * step)
    log.close()
    return cfg, run


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for test modules (importlib import mode cannot import conftest by name)."""
    import types

    return types.SimpleNamespace(T=T, TRAIN=TRAIN, VALID=VALID, STEPS=STEPS, write_corpus=write_corpus,
                                 tiny_config=tiny_config, controlled_model=controlled_model,
                                 logits_of=logits_of)
