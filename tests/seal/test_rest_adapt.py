"""ReST filtering, the policy fine-tune, and the outer loop: records, refusal when disabled, exact resume."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

import tinygpt_mlx.seal.adapt as adapt_mod
from tinygpt_mlx.config import Config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.seal.adapt import policy_dir, run_adapt
from tinygpt_mlx.seal.records import read_records
from tinygpt_mlx.seal.rest import finetune_policy, make_policy, save_policy, select_edits
from tinygpt_mlx.seal.reward import continuation_loss


def test_rest_keeps_only_rewarded_edits_that_beat_the_context():
    candidates = {
        "a": [{"reward": 0.10}, {"reward": 0.30}, {"reward": 0.20}],  # best 0.30 beats context 0.25
        "b": [{"reward": 0.10}, {"reward": 0.05}],                     # best 0.10 loses to context 0.20
        "c": [{"reward": -0.10}, {"reward": -0.05}],                   # beats a worse context, but hurts
        "d": [],
    }
    baseline = {"a": 0.25, "b": 0.20, "c": -0.50, "d": 0.0}
    assert select_edits(candidates, baseline) == {"a": 1}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_policy_finetune_learns_the_pair_and_round_trips(model, tokenizer, small_seal, tmp_path, mode):
    seal = small_seal(policy_mode=mode, policy_epochs=5, policy_lr=1e-2)
    base_weights = dict(tree_flatten(model.parameters()))
    policy = make_policy(model, seal)
    prompt, edit = [tokenizer.eos_id, *tokenizer.encode("Tom had a dog.")], tokenizer.encode(" The dog ran.")
    before = continuation_loss(policy, prompt, [*edit, tokenizer.eos_id])
    finetune_policy(policy, [(prompt, edit)], seal, seed=0, eos_id=tokenizer.eos_id)
    after = continuation_loss(policy, prompt, [*edit, tokenizer.eos_id])
    assert after < before - 0.1
    # The base model the inner loop adapts is never changed by the policy's training.
    assert all(mx.array_equal(v, base_weights[k]) for k, v in tree_flatten(model.parameters()))
    save_policy(policy, seal, tmp_path / "p")
    restored = make_policy(model, seal, tmp_path / "p")
    assert continuation_loss(restored, prompt, [*edit, tokenizer.eos_id]) == after


def test_disabled_seal_refuses_with_how_to_enable(model, tokenizer, stories, small_seal, tmp_path):
    with pytest.raises(UserError, match=r"set `seal.enabled: true`"):
        run_adapt(Config(), small_seal(enabled=False), model, tokenizer, tmp_path, stories)
    assert not (tmp_path / "adapt.jsonl").exists()


def _strip_times(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def test_adapt_writes_baselines_rounds_and_policies(model, tokenizer, stories, small_seal, tmp_path):
    seal = small_seal(include_context=True, k_edits=3)
    path = run_adapt(Config(), seal, model, tokenizer, tmp_path, stories, log=lambda _: None)
    records = read_records(path)
    rounds = [r for r in records if r["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    edits = [r for r in records if r["type"] == "edit"]
    by = {(r["round"], r["split"], r["method"]) for r in edits}
    assert by == {(0, "train", "none"), (0, "train", "context"), (0, "heldout", "none"), (0, "heldout", "context"),
                  (0, "heldout", "self_edit"), (1, "train", "self_edit"), (1, "heldout", "self_edit"),
                  (2, "train", "self_edit"), (2, "heldout", "self_edit")}
    train_r1 = [r for r in edits if r["round"] == 1 and r["split"] == "train"]
    assert len(train_r1) == 2 * 3 and sum(r["kept"] for r in train_r1) == rounds[1]["kept"]
    for r in edits:
        assert {"context_id", "inner_steps", "rank", "reward", "delta_loss", "forgetting", "wall_s"} <= r.keys()
        if r["method"] != "none":
            assert r["inner_steps"] == 3 and r["rank"] == 2 and len(r["grid"]) == 2
            assert r["delta_loss"] == pytest.approx(r["base_target_loss"] - r["target_loss"])
    assert (policy_dir(tmp_path, 1) / "adapters.safetensors").is_file()
    assert (policy_dir(tmp_path, 2) / "adapter_config.json").is_file()
    assert (tmp_path / "seal_config.yaml").is_file()


def test_an_interrupted_run_resumes_at_the_last_finished_round(tokenizer, stories, small_seal, fresh_model,
                                                               tmp_path, monkeypatch):
    seal = small_seal(include_context=True, k_edits=3)
    straight = run_adapt(Config(), seal, fresh_model(), tokenizer, tmp_path / "a", stories,
                         log=lambda _: None)

    real = adapt_mod.finetune_policy
    calls = {"n": 0}

    def crash_in_round_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid round 2
        return real(*args, **kwargs)

    monkeypatch.setattr(adapt_mod, "finetune_policy", crash_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run_adapt(Config(), seal, fresh_model(), tokenizer, tmp_path / "b", stories,
                  log=lambda _: None)
    partial = read_records(tmp_path / "b" / "adapt.jsonl")
    assert [r["round"] for r in partial if r["type"] == "round"] == [0, 1]
    assert partial[-1]["type"] == "edit" and partial[-1]["round"] == 2  # round 2's edits were written
    monkeypatch.setattr(adapt_mod, "finetune_policy", real)
    messages = []
    resumed = run_adapt(Config(), seal, fresh_model(), tokenizer, tmp_path / "b", stories,
                        log=messages.append)
    assert messages[0] == "resuming after round 1"
    assert _strip_times(read_records(resumed)) == _strip_times(read_records(straight))


def test_resume_with_other_settings_is_refused(model, tokenizer, stories, small_seal, tmp_path):
    run_adapt(Config(), small_seal(rounds=1), model, tokenizer, tmp_path, stories, log=lambda _: None)
    # More rounds extend the run; a different inner learning rate would mix two experiments.
    run_adapt(Config(), small_seal(rounds=2), model, tokenizer, tmp_path, stories, log=lambda _: None)
    assert [r["round"] for r in read_records(tmp_path / "adapt.jsonl") if r["type"] == "round"] == [0, 1, 2]
    with pytest.raises(UserError, match="holds a SEAL run with different settings"):
        run_adapt(Config(), small_seal(inner_lr=0.5), model, tokenizer, tmp_path, stories)
    assert json.loads((tmp_path / "adapt.jsonl").read_text().splitlines()[0])["type"] == "edit"


def test_long_context_models_still_measure_forgetting(tokenizer, stories, small_seal, tmp_path):
    # A GPT-2 import has 1024 positions; the forgetting set must not need 1024-token stretches.
    from tinygpt_mlx.config import ModelConfig
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.seal.adapt import Adapter

    big = TinyGPT(ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=1024), tokenizer.vocab_size)
    adapter = Adapter(Config(), small_seal(), big, tokenizer, tmp_path, stories, log=lambda _: None)
    assert adapter.scorer.windows is not None and adapter.scorer.windows.shape[1] == 129
