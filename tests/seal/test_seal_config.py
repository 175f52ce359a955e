"""The `seal` section: defaults, the shipped ablation config, and bad settings reported all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tinygpt_mlx.config import ConfigError
from tinygpt_mlx.seal.config import SealConfig, load_seal_config, split_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_ablation_config_loads():
    cfg, seal = load_seal_config(REPO / "configs" / "ablation_seal.yaml")
    assert seal.enabled is True
    # Enough power to see an effect: 50 training and 100 held-out contexts, 3 LoRA seeds per inner loop.
    assert seal.n_train_contexts >= 50 and seal.n_heldout_contexts >= 100 and seal.lora_seeds >= 3
    assert seal.rounds == 2 and seal.control_round and seal.cloze_items > 0
    assert cfg.runtime.seed == 42 and seal.chosen_rank in seal.ranks
    assert "implications" in seal.templates


def test_defaults_are_the_papers():
    seal = SealConfig()
    assert seal.include_context is True and seal.select_against == "none" and seal.lora_seeds == 3
    assert seal.templates == ["implications"]


def test_overrides_reach_the_seal_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"seal": {"enabled": True}, "runtime": {"seed": 3}}))
    cfg, seal = load_seal_config(path, ["seal.ranks=[2, 4]", "seal.inner_lr=3e-3"])
    assert seal.ranks == [2, 4] and seal.inner_lr == pytest.approx(3e-3) and cfg.runtime.seed == 3
    assert seal.chosen_rank == 2


def test_missing_seal_section_means_disabled():
    _, seal = split_config({})
    assert seal == SealConfig() and seal.enabled is False


@pytest.mark.parametrize(
    ("seal", "message"),
    [({"ranks": [4, 0]}, "seal.ranks must be a non-empty list of positive integers (LoRA rank > 0)"),
     ({"policy_rank": -1}, "seal.policy_rank (LoRA rank) must be a positive integer, got -1"),
     ({"lora_modules": ["c_attn", "qkv_proj"]}, "seal.lora_modules: unknown LoRA module(s) 'qkv_proj'"),
     ({"n_train_contexts": 0}, "seal.n_train_contexts must be positive"),
     ({"n_heldout_contexts": 0}, "seal.n_heldout_contexts must be positive"),
     ({"policy_mode": "ful"}, "is not one of lora, full (did you mean 'full'?)"),
     ({"templates": ["paraphrase"]}, "neither a template name"),
     ({"reward_rank": 16}, "seal.reward_rank (16) must be one of seal.ranks"),
     ({"inner_stpes": [1]}, "unknown key 'seal.inner_stpes' (did you mean 'inner_steps'?)"),
     ({"select_against": "context"}, "seal.select_against = 'context' is not one of none, passage"),
     ({"lora_seeds": 0}, "seal.lora_seeds must be positive, got 0"),
     ({"cloze_items": -1}, "seal.cloze_items must be >= 0, got -1"),
     ({"cloze_max_doc_freq": 0}, "seal.cloze_max_doc_freq must be in (0, 1], got 0")],
)
def test_bad_seal_settings_give_clear_errors(seal, message):
    with pytest.raises(ConfigError) as err:
        split_config({"seal": seal})
    assert any(message in p for p in err.value.problems), err.value.problems


def test_all_problems_of_both_parts_are_reported_together():
    with pytest.raises(ConfigError) as err:
        split_config({"model": {"d_model": -1}, "seal": {"ranks": [0], "lora_modules": ["nope"], "k_edits": 0}})
    problems = err.value.problems
    # Both model problems, then all three seal ones: nothing is held back for a second try.
    assert len(problems) == 5
    assert problems[0].startswith("model.d_model must be positive")
    assert sum(p.startswith("seal.") for p in problems) == 3
    assert "5 config errors" in str(err.value)
