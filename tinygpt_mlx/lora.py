"""LoRA for TinyGPT: low-rank adapters on chosen linear layers, saved, loaded, fused and removed again.

The layer itself is mlx-lm's tuner `LoRALinear` (y = W x + scale * B A x with A uniform, B zero): it wraps
an `nn.Linear` as `.linear`, so the base weights stay where they were and removing an adapter gives back
the exact base layer. mlx-lm picks target layers per model type; here each `model.arch` has its table.
Scale is alpha / rank (the LoRA paper's convention), so changing the rank does not change the update size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear

from tinygpt_mlx.errors import UserError

__all__ = ["LoRALinear", "apply_lora", "fuse_lora", "load_adapters", "lora_layers", "remove_lora",
           "save_adapters"]

# Short names hit every layer called that ("c_proj" is both the attention and the MLP output);
# dotted names pick one of them.
GPT2_PATHS: dict[str, tuple[str, ...]] = {
    "c_attn": ("attn.c_attn",),
    "c_proj": ("attn.c_proj", "mlp.c_proj"),
    "c_fc": ("mlp.c_fc",),
    "attn.c_attn": ("attn.c_attn",),
    "attn.c_proj": ("attn.c_proj",),
    "mlp.c_fc": ("mlp.c_fc",),
    "mlp.c_proj": ("mlp.c_proj",),
}
_Q, _K, _V, _O = (f"self_attn.{p}_proj" for p in "qkvo")
_GATE, _UP, _DOWN = (f"mlp.{p}_proj" for p in ("gate", "up", "down"))
# GPT-2's names pick the llama layers in the same role, so one module list (SEAL's default) fits both.
LLAMA_PATHS: dict[str, tuple[str, ...]] = {
    "q_proj": (_Q,), "k_proj": (_K,), "v_proj": (_V,), "o_proj": (_O,),
    "gate_proj": (_GATE,), "up_proj": (_UP,), "down_proj": (_DOWN,),
    "c_attn": (_Q, _K, _V), "c_proj": (_O, _DOWN), "c_fc": (_GATE, _UP),
    "attn.c_attn": (_Q, _K, _V), "attn.c_proj": (_O,), "mlp.c_fc": (_GATE, _UP), "mlp.c_proj": (_DOWN,),
}
MODULE_PATHS: dict[str, dict[str, tuple[str, ...]]] = {"gpt2": GPT2_PATHS, "llama": LLAMA_PATHS}
DEFAULT_MODULES = ("c_attn", "c_proj", "c_fc")
ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "tinygpt-lora-1"


@dataclass(frozen=True)
class LoRASettings:
    """How apply_lora was called; kept on the model (a plain attribute, not a parameter) for saving."""

    modules: tuple[str, ...]
    last_k_layers: int | None
    rank: int
    alpha: float
    dropout: float


LORA_ARG_NAMES = {"modules": "LoRA modules", "rank": "LoRA rank", "alpha": "LoRA alpha",
                  "dropout": "LoRA dropout", "last_k_layers": "LoRA last_k_layers"}


def check_lora_args(modules: Sequence[str], rank: int, alpha: float, dropout: float,
                    last_k_layers: int | None, names: dict[str, str] | None = None,
                    arch: str | None = None) -> list[str]:
    """Every problem with a LoRA setting (empty when sound); names says what to call each setting.

    Modules are checked against arch's layer names, or against every architecture's when arch is None.
    """
    n = {**LORA_ARG_NAMES, **(names or {})}
    problems = []
    known = MODULE_PATHS[arch] if arch is not None else {m: () for table in MODULE_PATHS.values() for m in table}
    unknown = [m for m in modules if m not in known]
    if unknown:
        problems.append(f"{n['modules']}: unknown LoRA module(s) {', '.join(map(repr, unknown))}"
                        f"{f' for model.arch {arch}' if arch else ''}; choose from {', '.join(known)}")
    if not modules:
        problems.append(f"{n['modules']} must name at least one module")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        problems.append(f"{n['rank']} must be a positive integer, got {rank!r}")
    if alpha <= 0:
        problems.append(f"{n['alpha']} must be positive, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        problems.append(f"{n['dropout']} must be in [0, 1), got {dropout}")
    if last_k_layers is not None and last_k_layers <= 0:
        problems.append(f"{n['last_k_layers']} must be positive or null (all layers), got {last_k_layers}")
    return problems


def _targets(model: nn.Module, modules: Sequence[str], last_k_layers: int | None) -> list[tuple[nn.Module, str]]:
    """(parent module, attribute) pairs, in layer order, for every linear layer the settings name."""
    blocks = model.blocks
    if last_k_layers is not None:
        blocks = blocks[-last_k_layers:]
    table = MODULE_PATHS[model.cfg.arch]
    paths = sorted({p for m in modules for p in table[m]})
    out = []
    for block in blocks:
        for path in paths:
            parent_name, leaf = path.split(".")
            out.append((getattr(block, parent_name), leaf))
    return out


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """The LoRA layers in model with their dotted paths."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def apply_lora(
    model: nn.Module,
    modules: Sequence[str] = DEFAULT_MODULES,
    last_k_layers: int | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Freeze model and wrap the named linear layers of the last k blocks (all when None) in LoRA layers."""
    problems = check_lora_args(modules, rank, alpha, dropout, last_k_layers, arch=model.cfg.arch)
    if problems:
        raise UserError("; ".join(problems))
    if lora_layers(model):
        raise UserError("the model already has LoRA layers; remove_lora or fuse_lora them first")
    model.freeze()
    for parent, leaf in _targets(model, modules, last_k_layers):
        layer = LoRALinear.from_base(getattr(parent, leaf), r=rank, dropout=dropout, scale=alpha / rank)
        parent.update_modules({leaf: layer})
    # Remember the settings on the model so save_adapters can describe what it writes.
    # (A dataclass, not a dict: nn.Module would store a dict among the parameters.)
    model._lora_settings = LoRASettings(tuple(modules), last_k_layers, rank, alpha, dropout)
    return model


def _replace_lora(model: nn.Module, fuse: bool) -> nn.Module:
    for name, layer in lora_layers(model):
        parent_path, leaf = name.rsplit(".", 1)
        parent = model
        for part in parent_path.split("."):
            parent = parent[int(part)] if isinstance(parent, list) else getattr(parent, part)
        parent.update_modules({leaf: layer.fuse() if fuse else layer.linear})
    model.__dict__.pop("_lora_settings", None)
    # A plain TinyGPT trains every parameter; apply_lora's freeze was only for the adapter's sake.
    model.unfreeze()
    return model


def fuse_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W + scale * (A B)^T) and drop the LoRA layers."""
    return _replace_lora(model, fuse=True)


def remove_lora(model: nn.Module) -> nn.Module:
    """Drop every LoRA layer, restoring the untouched base linear layers."""
    return _replace_lora(model, fuse=False)


def adapter_weights(model: nn.Module) -> dict[str, mx.array]:
    """The LoRA A and B matrices by dotted name (e.g. `h.3.attn.c_attn.lora_a`)."""
    return {k: v for k, v in tree_flatten(model.parameters()) if k.endswith((".lora_a", ".lora_b"))}


def save_adapters(model: nn.Module, directory: str | Path) -> Path:
    """Write adapters.safetensors and adapter_config.json (rank, alpha, dropout, modules, layers)."""
    settings = getattr(model, "_lora_settings", None)
    if settings is None or not lora_layers(model):
        raise UserError("the model has no LoRA layers to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(directory / ADAPTER_WEIGHTS), adapter_weights(model))
    config = {"format": ADAPTER_FORMAT, "n_layers": len(model.blocks), **asdict(settings)}
    config["modules"] = list(settings.modules)
    # Config last: a folder with a config is a complete adapter.
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """Apply LoRA as adapter_config.json describes, then load adapters.safetensors into it (strict)."""
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(f"{directory} is not an adapter folder (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads(config_path.read_text())
    if config.get("format") != ADAPTER_FORMAT:
        raise UserError(f"{config_path} has format {config.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    if config["n_layers"] != len(model.blocks):
        raise UserError(f"adapters in {directory} were made for {config['n_layers']} layers, "
                        f"the model has {len(model.blocks)}")
    apply_lora(model, config["modules"], config["last_k_layers"], config["rank"], config["alpha"],
               config["dropout"])
    weights = mx.load(str(weights_path))
    expected = adapter_weights(model)
    if set(weights) != set(expected):
        remove_lora(model)
        raise UserError(f"adapters in {directory} do not match their config: "
                        f"{len(set(weights) ^ set(expected))} names differ")
    for name, value in weights.items():
        if value.shape != expected[name].shape:
            remove_lora(model)
            raise UserError(f"adapter {name} has shape {value.shape}, the model needs {expected[name].shape}")
    model.load_weights(list(weights.items()), strict=False)
    return model
