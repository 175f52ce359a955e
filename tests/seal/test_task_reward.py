"""The task split, the no-context loss, and the reward's sign on constructed cases."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from tinygpt_mlx.config import Config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.seal.inner import InnerLoop
from tinygpt_mlx.seal.reward import Scorer, continuation_loss, general_windows, reward_of
from tinygpt_mlx.seal.task import build_task, derive_seed, split_sentences, split_story


def test_story_splits_into_first_and_second_half_of_sentences():
    item = split_story("s1", 'Tom ran. "Hi!" said Sue. Why? He was sad. The end.')
    assert item.context == 'Tom ran. "Hi!" said Sue.'
    assert item.target == "Why? He was sad. The end."
    assert split_story("s2", "Only one sentence.") is None
    assert split_sentences("A b.  C d!\nE f?") == ["A b.", "C d!", "E f?"]


def test_task_is_seeded_and_disjoint(stories, small_seal):
    seal = small_seal(n_train_contexts=3, n_heldout_contexts=2, n_forget_stories=4)
    task = build_task(stories, seal, seed=1)
    assert task == build_task(stories, seal, seed=1)
    assert task != build_task(stories, seal, seed=2)
    ids = [it.id for it in task.train + task.heldout]
    assert len(task.train) == 3 and len(task.heldout) == 2 and len(set(ids)) == 5
    used = {stories[int(i.split("-")[1])] for i in ids}
    assert not used & set(task.forget) and len(task.forget) == 4
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)


def test_too_few_stories_is_a_clear_error(stories, small_seal):
    with pytest.raises(UserError, match="SEAL needs 5 stories with at least 4 sentences"):
        build_task(stories[:3], small_seal(n_train_contexts=3, n_heldout_contexts=2), seed=0)


def test_continuation_loss_counts_only_the_target(model):
    prompt, target = [0, 5, 6], [7, 8, 9, 10]
    ids = mx.array([prompt + target])
    per_token = cross_entropy_loss(model(ids[:, :-1]), ids[:, 1:], reduction="none")[0]
    assert continuation_loss(model, prompt, target) == pytest.approx(per_token[2:].mean().item(), rel=1e-6)


def test_general_windows_join_stories_with_eos():
    windows = general_windows([[5, 6, 7], [8, 9]], eos_id=0, length=3)
    assert windows.tolist() == [[0, 5, 6, 7]]
    assert general_windows([[5]], eos_id=0, length=3) is None


def test_reward_subtracts_weighted_forgetting():
    assert reward_of(0.5, 0.2, 0.0) == 0.5
    assert reward_of(0.5, 0.2, 2.0) == pytest.approx(0.1)


def _point(result, steps, rank):
    return next(p for p in result["grid"] if p["steps"] == steps and p["rank"] == rank)


def test_training_on_the_target_itself_helps_and_a_random_text_helps_less(model, tokenizer, stories, small_seal):
    seal = small_seal(inner_steps=[1, 5, 10], ranks=[2, 4], reward_rank=4)
    item = split_story("s", stories[0])
    target = tokenizer.encode(item.target)[:32]
    windows = general_windows([tokenizer.encode(s) for s in stories[1:3]], tokenizer.eos_id, 64)
    scorer = Scorer(model, [tokenizer.eos_id], windows, forget_weight=0.0)
    base = scorer.target_loss(target)
    assert scorer.forgetting() == 0.0
    inner = InnerLoop(model, scorer, seal, Config())
    on_target = inner.adapt([tokenizer.eos_id, *target], target, base, seeds=[0])
    assert len(on_target["grid"]) == 6
    assert all(p["delta_loss"] > 0 and p["reward"] == p["delta_loss"] for p in on_target["grid"])
    # The reward is read at the largest step count and the chosen rank.
    assert (on_target["inner_steps"], on_target["rank"]) == (10, 4)
    assert on_target["reward"] == _point(on_target, 10, 4)["reward"] == on_target["seed_rewards"][0]
    # More steps on the target itself keep helping, and the base model is untouched afterwards.
    for rank in (2, 4):
        assert _point(on_target, 1, rank)["delta_loss"] < _point(on_target, 10, rank)["delta_loss"]
    assert scorer.target_loss(target) == base
    unrelated = tokenizer.encode(stories[5])[:32]
    other = inner.adapt([tokenizer.eos_id, *unrelated], target, base, seeds=[0])
    assert _point(other, 10, 2)["delta_loss"] < _point(on_target, 10, 2)["delta_loss"]
    assert math.isfinite(_point(other, 10, 2)["forgetting"])


def test_rewards_average_over_lora_seeds_and_a_seed_repeats_its_run(model, tokenizer, stories, small_seal):
    seal = small_seal(inner_steps=[2], ranks=[2])
    target = tokenizer.encode(split_story("s", stories[0]).target)[:32]
    scorer = Scorer(model, [tokenizer.eos_id], None, forget_weight=0.0)
    inner = InnerLoop(model, scorer, seal, Config())
    text = [tokenizer.eos_id, *tokenizer.encode(stories[0])[:48]]
    base = scorer.target_loss(target)
    both = inner.adapt(text, target, base, seeds=[1, 2])
    one, two = inner.adapt(text, target, base, seeds=[1]), inner.adapt(text, target, base, seeds=[2])
    assert both["seed_rewards"] == [one["reward"], two["reward"]] and one["reward"] != two["reward"]
    assert both["reward"] == pytest.approx((one["reward"] + two["reward"]) / 2, rel=1e-12)
    assert inner.adapt(text, target, base, seeds=[1]) == one  # same seed, same run, bit for bit


def test_the_inner_loop_trains_through_the_train_step_and_the_cpu_seam(model, tokenizer, small_seal, monkeypatch):
    import tinygpt_mlx.seal.inner as inner_mod

    seen = []
    real_step, real_accelerate = inner_mod.make_train_step, inner_mod.accelerate

    def make_train_step(model, optimizer, cfg):
        seen.append(("step", cfg.data.batch_size, cfg.runtime.grad_accum_steps))
        return real_step(model, optimizer, cfg)

    def accelerate(model, step, cfg):
        # Only the adapter trains: every trainable parameter is a LoRA matrix.
        seen.append(("seam", sorted({k.rsplit(".", 1)[-1] for k, _ in tree_flatten(model.trainable_parameters())})))
        return real_accelerate(model, step, cfg)

    monkeypatch.setattr(inner_mod, "make_train_step", make_train_step)
    monkeypatch.setattr(inner_mod, "accelerate", accelerate)
    scorer = Scorer(model, [tokenizer.eos_id], None, forget_weight=0.0)
    target = tokenizer.encode("The end.")
    InnerLoop(model, scorer, small_seal(ranks=[2]), Config()).adapt(
        [tokenizer.eos_id, *tokenizer.encode("Tom had a red ball.")], target, scorer.target_loss(target), seeds=[0, 1])
    assert seen == [("step", 1, 1), ("seam", ["lora_a", "lora_b"])] * 2


def test_an_empty_self_edit_scores_as_the_base_model(model, tokenizer, small_seal):
    seal = small_seal()
    scorer = Scorer(model, [tokenizer.eos_id], None, forget_weight=1.0)
    target = tokenizer.encode("The end.")
    result = InnerLoop(model, scorer, seal, Config()).adapt([tokenizer.eos_id], target, scorer.target_loss(target),
                                                            seeds=[0])
    assert [(p["steps"], p["rank"], p["delta_loss"], p["forgetting"]) for p in result["grid"]] == [
        (1, 2, 0.0, 0.0), (3, 2, 0.0, 0.0)]
