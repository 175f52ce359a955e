"""Config loading, overrides and validation: every user error named, all at once."""

from __future__ import annotations

import json

import pytest

from tinygpt_mlx.config import (
    Config,
    ConfigError,
    OptimConfig,
    build_section,
    check_choice,
    check_vocab,
    dump_config,
    from_dict,
    load_config,
    parse_override,
)


def problems_of(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    return info.value.problems


def test_defaults_are_valid_and_typed():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.d_model == 256 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.runtime.compute_dtype(accelerator=False) == "float32"


def test_shipped_configs_load(tmp_path):
    for name in ("base_config", "sanity", "demo"):
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.model.d_model % cfg.model.n_heads == 0
    sanity = load_config("configs/sanity.yaml").runtime
    assert sanity.compute_dtype(accelerator=True) == "bfloat16"
    assert sanity.compute_dtype(accelerator=False) == "float32"  # amp: float32 where bf16 is slow


@pytest.mark.parametrize(
    ("item", "section", "key", "expected"),
    [
        ("optim.lr=3e-4", "optim", "lr", 3e-4),  # YAML 1.1 reads 3e-4 as a string
        ("optim.lr=0.001", "optim", "lr", 0.001),
        ("model.n_layers=6", "model", "n_layers", 6),
        ("model.tie_embeddings=false", "model", "tie_embeddings", False),
        ("optim.betas=[0.8, 0.99]", "optim", "betas", [0.8, 0.99]),
        ("model.vocab_size=null", "model", "vocab_size", None),
        ("data.data_dir=/tmp/x:y", "data", "data_dir", "/tmp/x:y"),
        ("eval.sample_prompt=Hello there", "eval", "sample_prompt", "Hello there"),
    ],
)
def test_overrides_are_typed(item, section, key, expected):
    cfg = load_config(None, [item])
    assert getattr(getattr(cfg, section), key) == expected


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="must be section.key"):
        parse_override("lr=3")


def test_every_problem_reported_at_once():
    problems = problems_of([
        "model.d_modle=128", "model.n_heads=3", "optim.lr=-1", "data.block_size=512",
        "schedule.warmup_steps=5000", "model.dropout=abc", "optim.optimizer=adamw2",
    ])
    text = "\n".join(problems)
    assert "unknown key 'model.d_modle' (did you mean 'd_model'?)" in text
    assert "model.d_model (256) must be divisible by model.n_heads (3)" in text
    assert "optim.lr must be positive, got -1.0" in text
    assert "data.block_size (512) must not exceed model.max_seq_len (256)" in text
    assert "schedule.warmup_steps (5000) must not exceed schedule.max_steps (2000)" in text
    assert "model.dropout must be a number, got 'abc'" in text
    assert "optim.optimizer = 'adamw2' is not one of adamw, adam, sgd (did you mean 'adamw'?)" in text
    assert len(problems) == 7


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("model.d_model=0", "model.d_model must be positive, got 0"),
        ("data.batch_size=-4", "data.batch_size must be positive, got -4"),
        ("model.n_layers=2.5", "model.n_layers must be an integer, got 2.5"),
        ("model.tie_embeddings=maybe", "model.tie_embeddings must be true or false"),
        ("runtime.precision=fp8", "runtime.precision = 'fp8' is not one of"),
        ("optim.betas=0.9", "optim.betas must be a list"),
        ("data.dataset=local", "data.dataset = 'local' needs data.data_dir"),
    ],
)
def test_single_problems(item, message):
    assert any(message in p for p in problems_of([item]))


def test_unknown_section_did_you_mean():
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        from_dict({"optimizer": {"lr": 1.0}})
    with pytest.raises(ConfigError, match=r"did you mean 'schedule'"):
        from_dict({"schedul": {}})


def test_build_section_coerces_and_lists_every_problem():
    section, problems = build_section(OptimConfig, {"lr": "1e-3", "betas": ["0.8", 0.9], "momentm": 0.5,
                                                    "grad_clip": "big"}, "opt")
    assert section.lr == 1e-3 and section.betas == [0.8, 0.9]
    assert section.grad_clip == OptimConfig().grad_clip  # a bad value keeps the default
    assert problems == ["unknown key 'opt.momentm' (did you mean 'momentum'?)",
                        "opt.grad_clip must be a number, got 'big'"]
    assert build_section(OptimConfig, None, "opt") == (OptimConfig(), [])
    assert build_section(OptimConfig, [1], "opt") == (OptimConfig(), ["section 'opt' must be a mapping, got [1]"])


def test_check_choice():
    assert check_choice("a.b", "sgd", ("adam", "sgd")) == []
    assert check_choice("a.b", "adamm", ("adam", "sgd")) == ["a.b = 'adamm' is not one of adam, sgd "
                                                             "(did you mean 'adam'?)"]


def test_vocab_smaller_than_tokenizer_refused():
    cfg = load_config(None, ["model.vocab_size=50"])
    check_vocab(cfg, 50)
    with pytest.raises(ConfigError, match=r"model.vocab_size \(50\) is smaller than the tokenizer's vocabulary \(65\)"):
        check_vocab(cfg, 65)


def test_json_and_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["model.d_model=64", "optim.lr=1e-3", "data.tokenizer=bpe"])
    dump_config(cfg, tmp_path / "run_config.yaml")
    assert load_config(tmp_path / "run_config.yaml") == cfg
    (tmp_path / "c.json").write_text(json.dumps({"model": {"d_model": 64}}))
    assert load_config(tmp_path / "c.json").model.d_model == 64


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_configuration_page_lists_every_key():
    import dataclasses
    import re
    import typing
    from pathlib import Path

    from tinygpt_mlx.seal.config import SealConfig

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    documented = {m.group(1): set(re.findall(r"^\| `(\w+)` \|", m.group(2), re.M))
                  for m in re.finditer(r"^### `(\w+)`\n(.*?)(?=^### |\Z)", page, re.M | re.S)}
    sections = {**typing.get_type_hints(Config), "seal": SealConfig}
    assert documented == {name: {f.name for f in dataclasses.fields(cls)} for name, cls in sections.items()}
