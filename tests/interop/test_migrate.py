"""The original TinyGPT repository's configs (tests/data/seed_configs) translated to this schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tinygpt_mlx.config import Config, ConfigError, from_dict, read_file
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.interop.migrate import (
    OLD_KEYS,
    ONLY_AT_END,
    is_old,
    migrate,
    migrate_sweep,
    to_commented_yaml,
)
from tinygpt_mlx.scaling.sweep import expand, load_sweep

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "data" / "seed_configs"
FILES = sorted(p.name for p in SEED.iterdir() if p.suffix in (".yaml", ".json"))
SWEEPS = [name for name in FILES if name.startswith(("scaling_", "ablation_"))]


def old(name: str) -> dict[str, Any]:
    return read_file(SEED / name, migrate=False)


def translated(raw: dict[str, Any]) -> Config:
    mig = migrate(raw)
    assert mig.refusals == []
    return from_dict(mig.config)


def test_the_eight_original_files_are_there() -> None:
    assert FILES == ["ablation_optimizer.yaml", "ablation_tokenizer.yaml", "base_config.yaml",
                     "sample_custom.json", "scaling_context.yaml", "scaling_data.yaml", "scaling_depth.yaml",
                     "scaling_width.yaml"]


@pytest.mark.parametrize("name", FILES)
def test_each_original_file_translates_to_a_valid_config(name: str) -> None:
    raw = old(name)
    assert is_old(raw)
    with pytest.raises(ConfigError):  # as written, the file is not this schema
        from_dict({k: v for k, v in raw.items() if k != "sweep"})
    cfg = translated(raw)
    assert cfg.model.d_model == raw["model"]["d_model"] and cfg.model.n_heads == raw["model"]["n_heads"]
    assert cfg.optim.lr == raw["training"]["learning_rate"]
    assert cfg.schedule.max_steps is None and cfg.schedule.epochs > 0
    assert cfg.checkpoint.save_dir == raw["logging"]["output_dir"]


def test_base_config_carries_its_meaning_over() -> None:
    cfg = translated(old("base_config.yaml"))
    # One epoch of 256-token windows every 128 tokens trains on each token twice.
    assert (cfg.schedule.epochs, cfg.schedule.max_steps, cfg.schedule.warmup_steps) == (2.0, None, 500)
    assert (cfg.data.dataset, cfg.data.tokenizer, cfg.data.block_size, cfg.data.batch_size) == \
        ("tinystories", "char", 256, 32)
    assert (cfg.data.bpe_vocab_size, cfg.data.val_frac, cfg.data.max_stories) == (8000, 0.05, None)
    assert (cfg.model.d_ff, cfg.model.max_seq_len, cfg.model.dropout) == (1024, 256, 0.1)
    assert (cfg.optim.optimizer, cfg.optim.weight_decay, cfg.optim.grad_clip) == ("adamw", 0.1, 1.0)
    assert (cfg.runtime.amp, cfg.runtime.seed, cfg.runtime.log_interval, cfg.runtime.device) == \
        (True, 42, 100, "auto")
    assert (cfg.eval.eval_every, cfg.checkpoint.save_every, cfg.schedule.lr_schedule) == (500, 1000, "cosine")


def test_sample_custom_reads_its_own_corpus() -> None:
    cfg = translated(old("sample_custom.json"))
    assert (cfg.data.dataset, cfg.data.data_dir, cfg.data.val_frac) == \
        ("local", "data/sample/sample_text.txt", 0.1)
    assert cfg.data.num_workers == 1  # 0 meant "in the main process"
    assert cfg.schedule.epochs == 6.0  # 3 epochs x 128/64 overlap


def test_every_old_key_is_mapped_or_refused() -> None:
    for name in FILES:
        raw = old(name)
        mig = migrate(raw)
        said = " ".join([*mig.origins.values(), *mig.notices])
        for section, values in raw.items():
            if section == "sweep":
                continue
            for key in values:
                assert f"{section}.{key}" in OLD_KEYS, f"{name}: {section}.{key} is not in the table"
                assert f"{section}.{key}" in said, f"{name}: {section}.{key} left no trace"
    # A key the table does not know is refused with a hint, never dropped.
    raw = old("base_config.yaml")
    raw["training"]["lerning_rate"] = 1e-3
    raw["logging"]["project"] = "tinygpt"
    refusals = migrate(raw).refusals
    assert refusals[0] == "training.lerning_rate: not a key of the original layout (did you mean " \
                          "'training.learning_rate'?)"
    assert refusals[1].startswith("logging.project: not a key of the original layout")


def test_docs_table_lists_every_old_key() -> None:
    text = (REPO / "docs" / "migration.md").read_text()
    missing = [key for key in OLD_KEYS if f"`{key}`" not in text]
    assert missing == []


def base(**changes: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(old("base_config.yaml"))
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize(("changes", "expected"), [
    ({"training": {"max_steps": 3000}}, {"schedule.max_steps": 3000, "schedule.epochs": 1}),
    ({"data": {"stride": 64, "data_fraction": 0.5}}, {"schedule.epochs": 2.0, "schedule.max_steps": None}),
    ({"data": {"stride": None}}, {"schedule.epochs": 1.0}),
    ({"data": {"tokenizer_type": "subword", "vocab_size": None}, "model": {"vocab_size": 2048}},
     {"data.tokenizer": "bpe", "data.bpe_vocab_size": 2048, "model.vocab_size": 2048}),
    ({"training": {"eval_interval": 0, "save_interval": None}},
     {"eval.eval_every": ONLY_AT_END, "checkpoint.save_every": ONLY_AT_END}),
    ({"training": {"device": "cuda", "use_amp": False}}, {"runtime.device": "gpu", "runtime.amp": False}),
    ({"training": {"scheduler": "none", "optimizer": "sgd"}},
     {"schedule.lr_schedule": "constant", "optim.optimizer": "sgd"}),
    ({"data": {"max_length": 128}, "model": {"max_seq_len": None}},
     {"data.block_size": 128, "model.max_seq_len": 128}),
    ({"data": {"dataset_name": "custom", "train_file": "corpus.txt", "val_split": 0.2}},
     {"data.dataset": "local", "data.data_dir": "corpus.txt", "data.val_frac": 0.2}),
])
def test_semantics_carry_over(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    raw = base(**changes)
    if raw["model"].get("max_seq_len", 0) is None:
        del raw["model"]["max_seq_len"]
    mig = migrate(raw)
    assert mig.refusals == []
    flat = {f"{s}.{k}": v for s, values in mig.config.items() for k, v in values.items()}
    assert {k: flat[k] for k in expected} == expected
    from_dict(mig.config)


@pytest.mark.parametrize(("changes", "refusal"), [
    ({"data": {"dataset_name": "openwebtext"}},
     "data.dataset_name = 'openwebtext': only roneneldan/TinyStories"),
    ({"data": {"dataset_name": "custom"}}, "data.dataset_name = 'custom' needs data.train_file"),
    ({"data": {"val_file": "val.txt", "train_file": "train.txt", "dataset_name": "custom"}},
     "data.val_file = 'val.txt': this loader"),
    ({"data": {"tokenizer_type": "wordpiece"}}, "data.tokenizer_type = 'wordpiece' is not one of"),
    ({"data": {"data_fraction": 1.5}}, "data.data_fraction must be in (0, 1.0], got 1.5"),
    ({"data": {"stride": 512}}, "data.stride (512) is longer than the window (256)"),
    ({"data": {"data_fraction": 0.5}, "training": {"max_steps": 100}},
     "data.data_fraction = 0.5 with training.max_steps"),
    ({"logging": {"use_wandb": True}}, "logging.use_wandb = true: there is no Weights & Biases logging"),
    ({"data": {"batch_size": 8}},
     "training.batch_size = 32 and data.batch_size = 8 both set data.batch_size"),
])
def test_what_cannot_carry_over_is_refused(changes: dict[str, Any], refusal: str) -> None:
    refusals = migrate(base(**changes)).refusals
    assert len(refusals) == 1 and refusals[0].startswith(refusal), refusals


def test_read_file_translates_with_one_notice_and_refuses_in_one_error(tmp_path: Path, capsys) -> None:
    assert read_file(SEED / "base_config.yaml") == migrate(old("base_config.yaml")).config
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ") and "original TinyGPT layout" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base(data={"tokenizer_type": "wordpiece"}, logging={"use_wandb": True})))
    with pytest.raises(UserError, match="2 of its settings cannot be translated") as info:
        read_file(bad)
    assert "wordpiece" in str(info.value) and "use_wandb" in str(info.value)


def test_this_repositorys_configs_are_left_alone(capsys) -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert not is_old(read_file(path, migrate=False)), path
        assert read_file(path) == read_file(path, migrate=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_blocks_expand(name: str, tmp_path: Path) -> None:
    raw = old(name)
    runs = expand(load_sweep(SEED / name), tmp_path)
    values = raw["sweep"]["values"]
    assert len(runs) == len(values)
    section, key = raw["sweep"]["parameter"].split(".")
    for run, value in zip(runs, values, strict=True):
        one = copy.deepcopy(raw)
        one[section][key] = value
        expected = translated(one)
        expected.checkpoint.save_dir = str(tmp_path / "runs" / run.name)
        assert run.config == expected


def test_sweep_names_and_grids() -> None:
    grids = {name: migrate_sweep(old(name), name)[0]["grid"] for name in SWEEPS}
    assert grids["scaling_width.yaml"] == {"model.d_model": [64, 128, 256, 384, 512]}
    assert grids["scaling_context.yaml"] == {"data.block_size": [64, 128, 256, 512],
                                             "model.max_seq_len": [64, 128, 256, 512]}
    assert grids["scaling_data.yaml"] == {"schedule.epochs": [0.01, 0.025, 0.05, 0.1, 0.25]}
    assert grids["ablation_tokenizer.yaml"] == {"data.tokenizer": ["char", "bpe"]}
    assert grids["ablation_optimizer.yaml"] == {"optim.optimizer": ["adamw", "adam", "sgd"]}


def test_adjust_heads_keeps_d_model_divisible(tmp_path: Path) -> None:
    raw = old("scaling_width.yaml")
    raw["model"]["n_heads"] = 8
    raw["sweep"]["values"] = [64, 100, 96]
    sweep, refusals = migrate_sweep(raw, "width.yaml")
    assert refusals == []
    assert sweep["grid"] == {"model.d_model": [64, 100, 96], "model.n_heads": [8, 5, 8]}
    # Without it, d_model 100 cannot be split over 8 heads: expand names the run and the problem.
    raw["sweep"]["adjust_heads"] = False
    path = tmp_path / "width.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"run d_model-100: model.d_model \(100\) must be divisible"):
        expand(load_sweep(path), tmp_path / "out")


def test_bad_sweep_blocks_are_refused() -> None:
    raw = old("scaling_depth.yaml")
    raw["sweep"] = {"parameter": "model.n_layerz", "values": [], "grid": 3}
    sweep, refusals = migrate_sweep(raw, "x.yaml")
    assert sweep == {} and refusals[0].startswith("sweep.grid: not a key of the original sweep block")
    assert refusals[1:] == ["sweep.values must be a non-empty list"]
    raw["sweep"] = {"parameter": "n_layers", "values": [2, "two"]}
    assert migrate_sweep(raw, "x.yaml")[0]["grid"] == {"model.n_layers": [2, "two"]}  # from_dict judges "two"


def test_commented_yaml_loads_back_to_the_translation() -> None:
    for name in FILES:
        mig = migrate(old(name))
        text = to_commented_yaml(mig, name)
        assert yaml.safe_load(text) == mig.config
        assert "  epochs: " in text and "# from training.epochs" in text


def test_short_runs_clamp_warmup_and_say_so(capsys) -> None:
    cfg = from_dict({"schedule": {"max_steps": 2, "warmup_steps": 500}})
    assert cfg.schedule.warmup_steps == 2
    assert capsys.readouterr().err == "note: schedule.warmup_steps 500 clamped to this short run's 2 steps\n"
    with pytest.raises(ConfigError, match=r"schedule.warmup_steps \(5000\) must not exceed"):
        from_dict({"schedule": {"max_steps": 2000, "warmup_steps": 5000}})
