"""Tiny TinyGPT checkpoints and tiny random Hugging Face GPT-2 folders with the real GPT-2 vocabulary.

Weights are drawn wider than GPT-2's init (std 0.02 gives near-flat logits, where greedy decoding would
hinge on 1e-7 differences between frameworks), so greedy generations are varied and decisive.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.tokenizers.char import train_char
from tinygpt_mlx.train.checkpoint import save_checkpoint
from tinygpt_mlx.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[2]
TEXT = "Once upon a time there was a little girl named Lily. She liked to play with her cat, Tom!\n"
HF = {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # Two cores shared by several jobs: torch's spinning intra-op pool makes tiny models much slower.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def tinygpt(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "tinygpt_mlx", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """tinygpt(*args) in a subprocess (test modules cannot import conftest under --import-mode=importlib)."""
    return tinygpt


@pytest.fixture(scope="session")
def story() -> str:
    """The text the char tokenizer of make_checkpoint was built from."""
    return TEXT


def widen(model: TinyGPT, seed: int, std: float = 0.3) -> None:
    """Redraw every parameter from N(0, std) (norm gains around 1) so logits are far from flat."""
    mx.random.seed(seed)
    params = []
    for name, value in tree_flatten(model.parameters()):
        noise = std * mx.random.normal(value.shape)
        gain = name.endswith("weight") and (".ln_" in f".{name}" or "norm" in name)  # GPT-2's ln_*, llama's *norm
        params.append((name, 1.0 + noise if gain else noise))
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())


@pytest.fixture
def make_checkpoint(tmp_path: Path, make_config) -> Callable[..., tuple[Path, TinyGPT, object]]:
    """make_checkpoint(**model_options) -> (run folder, model, char tokenizer)."""
    counter = iter(range(100))

    def make(**model: object) -> tuple[Path, TinyGPT, object]:
        tok = train_char([TEXT])
        run = tmp_path / f"run{next(counter)}"
        cfg = make_config(run, model={"max_seq_len": 64, **model}, schedule={"max_steps": 4, "warmup_steps": 0})
        net = TinyGPT(cfg.model, cfg.model.vocab_size or tok.vocab_size)
        widen(net, seed=len(tree_flatten(net.parameters())))
        net.eval()
        save_checkpoint(run, 3, net, build_optimizer(cfg, 4), cfg, tok, {"step": 3, "tokens_seen": 96})
        return run, net, tok

    return make


def gpt2_tokenizer_files(gpt2_bpe_dir: Path, dest: Path, kind: str) -> None:
    """Tokenizer files as HF hub folders hold them: `vocab+merges` (the originals) or `tokenizer.json`."""
    dest.mkdir(parents=True, exist_ok=True)
    if kind == "vocab+merges":
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(gpt2_bpe_dir / name, dest / name)
        return
    from transformers import GPT2Tokenizer

    GPT2Tokenizer.from_pretrained(str(gpt2_bpe_dir)).save_pretrained(str(dest))


def random_hf_gpt2(dest: Path, seed: int = 0, **config: object):
    """A random GPT2LMHeadModel (real 50257 vocabulary) saved to dest with save_pretrained; returns it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**{"vocab_size": 50257, "initializer_range": 0.3, **HF, **config}))
    model.eval()
    model.save_pretrained(str(dest))
    return model


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory: pytest.TempPathFactory, gpt2_bpe_dir: Path):
    """(folder, model): save_pretrained's model.safetensors + tokenizer.json."""
    dest = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model = random_hf_gpt2(dest)
    gpt2_tokenizer_files(gpt2_bpe_dir, dest, "tokenizer.json")
    return dest, model
