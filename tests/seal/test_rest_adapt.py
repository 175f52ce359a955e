"""ReST filtering, the policy fine-tune, and the outer loop: records, sampled ids, common random numbers, resume."""

from __future__ import annotations

import json
from collections import Counter

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

import tinygpt_mlx.seal.adapt as adapt_mod
from tinygpt_mlx.config import Config, DataConfig
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.seal.adapt import policy_dir, run_adapt
from tinygpt_mlx.seal.edits import prompt_ids, sample_edit
from tinygpt_mlx.seal.inner import InnerLoop
from tinygpt_mlx.seal.records import RecordLog, read_records
from tinygpt_mlx.seal.rest import finetune_policy, make_policy, save_policy, select_edits
from tinygpt_mlx.seal.reward import continuation_loss
from tinygpt_mlx.tokenizers import build_tokenizer


def quiet(_: str) -> None:
    """A log that drops messages."""


def test_rest_keeps_the_best_rewarded_edit_against_no_adaptation_or_the_passage():
    candidates = {
        "a": [{"reward": 0.10}, {"reward": 0.30}, {"reward": 0.20}],  # best 0.30 beats passage 0.25
        "b": [{"reward": 0.10}, {"reward": 0.05}],                     # best 0.10 loses to passage 0.20
        "c": [{"reward": -0.10}, {"reward": -0.05}],                   # beats a worse passage, but hurts
        "d": [],
    }
    # The paper's rule: the best of k whenever it beats no adaptation (reward > 0).
    assert select_edits(candidates) == {"a": 1, "b": 0}
    assert select_edits(candidates, {"a": 0.25, "b": 0.20, "c": -0.50, "d": 0.0}) == {"a": 1}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_policy_finetune_learns_the_pair_and_round_trips(model, tokenizer, small_seal, tmp_path, mode):
    seal = small_seal(policy_mode=mode, policy_epochs=5, policy_lr=3e-3)
    base_weights = dict(tree_flatten(model.parameters()))
    policy = make_policy(model, seal, seed=0)
    prompt, edit = [tokenizer.eos_id, *tokenizer.encode("Tom had a dog.")], tokenizer.encode(" The dog ran.")
    before = continuation_loss(policy, prompt, [*edit, tokenizer.eos_id])
    finetune_policy(policy, [(prompt, edit)], seal, seed=0, eos_id=tokenizer.eos_id)
    after = continuation_loss(policy, prompt, [*edit, tokenizer.eos_id])
    assert after < before - 0.1
    # The base model the inner loop adapts is never changed by the policy's training.
    assert all(mx.array_equal(v, base_weights[k]) for k, v in tree_flatten(model.parameters()))
    save_policy(policy, seal, tmp_path / "p")
    restored = make_policy(model, seal, 0, tmp_path / "p")
    assert continuation_loss(restored, prompt, [*edit, tokenizer.eos_id]) == after


def test_a_new_policy_adapter_does_not_depend_on_the_global_random_state(model, small_seal):
    # A resume after round 0 builds the round-0 policy again, after other draws than the first run made.
    mx.random.seed(1)
    first = dict(tree_flatten(make_policy(model, small_seal(), seed=5).trainable_parameters()))
    mx.random.seed(2)
    mx.random.uniform(shape=(7,))
    second = dict(tree_flatten(make_policy(model, small_seal(), seed=5).trainable_parameters()))
    assert first.keys() == second.keys() and all(mx.array_equal(first[k], second[k]) for k in first)
    other = dict(tree_flatten(make_policy(model, small_seal(), seed=6).trainable_parameters()))
    assert not all(mx.array_equal(first[k], other[k]) for k in first)


def test_disabled_seal_refuses_with_how_to_enable(model, tokenizer, stories, small_seal, tmp_path):
    with pytest.raises(UserError, match=r"set `seal.enabled: true`"):
        run_adapt(Config(), small_seal(enabled=False), model, tokenizer, tmp_path, stories)
    assert not (tmp_path / "adapt.jsonl").exists()


def _strip_times(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def _key(r):
    return (r["round"], r["split"], r["method"], r.get("inner_text"))


def test_adapt_writes_every_row_and_round(model, tokenizer, stories, small_seal, tmp_path):
    seal = small_seal(k_edits=3, eval_edits=2, inner_steps=[1, 3])
    path = run_adapt(Config(), seal, model, tokenizer, tmp_path, stories, log=quiet)
    records = read_records(path)
    rounds = [r for r in records if r["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    edits = [r for r in records if r["type"] == "edit"]
    counts = Counter(_key(r) for r in edits)
    assert counts == {
        (0, "heldout", "none", None): 2, (0, "heldout", "in_context", None): 2, (0, "heldout", "passage", None): 2,
        (0, "heldout", "self_edit", "passage+edit"): 4, (0, "heldout", "self_edit", "edit"): 4,
        (0, "heldout", "control", "passage+edit"): 4,
        (1, "train", "self_edit", "passage+edit"): 6, (1, "heldout", "self_edit", "passage+edit"): 4,
        (2, "train", "self_edit", "passage+edit"): 6, (2, "heldout", "self_edit", "passage+edit"): 4}
    for r in edits:
        assert {"context_id", "inner_steps", "rank", "reward", "delta_loss", "forgetting", "cloze_acc"} <= r.keys()
        if r["method"] in ("none", "in_context"):
            assert r["grid"] == [] and r["forgetting"] == 0.0 and r["reward"] == r["delta_loss"]
        else:
            assert r["inner_steps"] == 3 and r["rank"] == 2 and len(r["grid"]) == 2
            assert len(r["seed_rewards"]) == 2 and r["reward"] == pytest.approx(sum(r["seed_rewards"]) / 2)
            assert r["delta_loss"] == pytest.approx(r["base_target_loss"] - r["target_loss"])
        if r["split"] == "heldout":
            assert r["cloze_items"] >= 0 and (r["cloze_acc"] is None) == (r["cloze_items"] == 0)
    assert any(r["cloze_items"] > 0 for r in edits if r["split"] == "heldout")
    for rnd in rounds[1:]:
        train = [r for r in edits if r["round"] == rnd["round"] and r["split"] == "train"]
        best = {c: max((r for r in train if r["context_id"] == c), key=lambda r: r["reward"]) for c in
                {r["context_id"] for r in train}}
        assert rnd["kept_edits"] == {c: r["sample"] for c, r in best.items() if r["reward"] > 0}
        assert rnd["kept"] == len(rnd["kept_edits"])
    assert (policy_dir(tmp_path, 1) / "adapters.safetensors").is_file()
    assert (policy_dir(tmp_path, 2) / "adapter_config.json").is_file()
    assert (tmp_path / "seal_config.yaml").is_file()


def test_the_policy_learns_the_ids_it_sampled(stories, small_seal, model_for, tmp_path, monkeypatch):
    # Byte-level BPE: a sampled " He" decodes, strips and re-encodes as "He", another token.
    tok = build_tokenizer(DataConfig(tokenizer="bpe", bpe_vocab_size=300), stories)
    model = model_for(tok.vocab_size)
    seen = []

    def finetune(policy, pairs, seal, seed, eos_id):
        seen.extend(pairs)
        return finetune_policy(policy, pairs, seal, seed, eos_id)

    monkeypatch.setattr(adapt_mod, "finetune_policy", finetune)
    seal = small_seal(rounds=1, k_edits=3, inner_lr=0.1, lora_seeds=1, other_inner_text_row=False, control_round=False)
    records = read_records(run_adapt(Config(), seal, model, tok, tmp_path, stories, log=quiet))
    kept = next(r for r in records if r["type"] == "round" and r["round"] == 1)["kept_edits"]
    assert kept and len(seen) == len(kept)
    adapter = adapt_mod.Adapter(Config(), seal, model, tok, tmp_path, stories, quiet)
    policy = make_policy(model, seal, adapter.seed)
    for (prompt, target), (context_id, sample) in zip(seen, kept.items(), strict=True):
        record = next(r for r in records if r["round"] == 1 and r["type"] == "edit" and r["split"] == "train"
                      and r["context_id"] == context_id and r["sample"] == sample)
        item = next(it for it in adapter.task.train if it.id == context_id)
        again = sample_edit(policy, tok, adapter.context[item.id], record["template"], seal.edit_max_tokens,
                            seal.edit_temperature, seal.edit_top_p,
                            adapt_mod.derive_seed(adapter.seed, "edit", 1, context_id, sample))
        assert target == record["edit_ids"] == again.ids
        assert prompt == prompt_ids(tok, record["template"], adapter.context[item.id]) == again.prompt
    train = [r for r in records if r["type"] == "edit" and r["split"] == "train"]
    # The check has teeth: re-encoding the text would give other ids for some of these edits.
    assert any(tok.encode(r["edit"]) != r["edit_ids"] for r in train)


def test_a_round_that_changed_nothing_repeats_round_zero(fresh_model, tokenizer, stories, small_seal, tmp_path,
                                                         monkeypatch):
    # Common random numbers: held-out sampling and LoRA seeds do not depend on the round, so a policy that
    # learned nothing scores exactly what the base policy scored; only the control draws fresh samples.
    monkeypatch.setattr(adapt_mod, "finetune_policy", lambda *args: float("nan"))
    seal = small_seal(rounds=1, other_inner_text_row=False)
    records = read_records(run_adapt(Config(), seal, fresh_model(), tokenizer, tmp_path, stories, log=quiet))

    def held_out(round_no, method):
        rows = [r for r in records if r["type"] == "edit" and r["split"] == "heldout" and r["round"] == round_no
                and r["method"] == method]
        return [{k: v for k, v in r.items() if k not in ("round", "wall_s", "method")} for r in rows]

    assert held_out(1, "self_edit") == held_out(0, "self_edit") and held_out(1, "self_edit")
    control = held_out(0, "control")
    assert [r["edit_ids"] for r in control] != [r["edit_ids"] for r in held_out(0, "self_edit")]


class Killer:
    """Stops run i of a chain at plan[i], raising KeyboardInterrupt as Ctrl-C would at that point."""

    def __init__(self, monkeypatch, plan):
        self.plan, self.counts, self.pending, self.spec = list(plan), Counter(), False, None

        def before(event, fn):
            def wrapped(*args, **kwargs):
                self.hit(event)
                return fn(*args, **kwargs)
            return wrapped

        def after(event, fn):
            def wrapped(*args, **kwargs):
                out = fn(*args, **kwargs)
                self.hit(event)  # the policy's temporary folder is written, not yet renamed
                return out
            return wrapped

        real_append = RecordLog.append

        def append(log, record):
            self.hit("append")
            if record["type"] == "round" and self.spec == ("torn-round", record["round"]):
                with log.path.open("a") as f:
                    f.write(json.dumps(record)[:20])
                raise KeyboardInterrupt
            real_append(log, record)
            if record["type"] == "round" and self.spec == ("after-round", record["round"]):
                self.pending = True

        for name in ("sample_edit", "make_policy", "finetune_policy"):
            monkeypatch.setattr(adapt_mod, name, before(name, getattr(adapt_mod, name)))
        monkeypatch.setattr(adapt_mod, "save_policy", after("save_policy", adapt_mod.save_policy))
        monkeypatch.setattr(InnerLoop, "adapt", before("adapt", InnerLoop.adapt))
        monkeypatch.setattr(RecordLog, "append", append)

    def start(self):
        self.counts.clear()
        self.pending, self.spec = False, self.plan.pop(0) if self.plan else None

    def hit(self, event):
        if self.pending:
            raise KeyboardInterrupt
        self.counts[event] += 1
        if self.spec == (event, self.counts[event]):
            raise KeyboardInterrupt


def _adapter_weights(run_dir, round_no):
    return mx.load(str(policy_dir(run_dir, round_no) / "adapters.safetensors"))


def test_a_run_killed_anywhere_resumes_to_the_same_records(fresh_model, tokenizer, stories, small_seal, tmp_path,
                                                           monkeypatch):
    seal = small_seal()

    def run(folder, log=quiet):
        return run_adapt(Config(), seal, fresh_model(), tokenizer, tmp_path / folder, stories, log=log)

    straight = read_records(run("straight"))
    plan = [("adapt", 2),              # mid round 0, among the passage baselines
            ("after-round", 0),        # at the boundary after round 0 (the round-0 policy is rebuilt)
            ("sample_edit", 2),        # mid round 1, sampling the training self-edits
            ("save_policy", 1),        # round 1's policy written to its temporary folder, not renamed
            ("torn-round", 1),         # half of round 1's summary line written
            ("after-round", 1),        # at the boundary after round 1
            ("adapt", 5),              # mid round 2, evaluating the new policy on held-out contexts
            ("finetune_policy", 1),    # mid round 2, before the policy update
            ("after-round", 2)]        # after the last record: nothing left to stop
    killer = Killer(monkeypatch, plan)
    where = []
    while True:
        killer.start()
        try:
            run("killed")
            break
        except KeyboardInterrupt:
            records = read_records(tmp_path / "killed" / "adapt.jsonl")
            where.append(([r["round"] for r in records if r["type"] == "round"],
                          sum(r["type"] == "edit" for r in records)))
    # Where each kill landed: (finished rounds, edit records on disk). A straight run has 12 + 6 + 6 edits.
    assert where == [([], 5), ([0], 12), ([0], 13), ([0], 16), ([0], 18), ([0, 1], 18), ([0, 1], 22),
                     ([0, 1], 22)]
    messages = []
    final = read_records(run("killed", log=messages.append))
    assert messages == ["resuming: 24 records found, rounds [0, 1, 2] finished"]
    assert _strip_times(final) == _strip_times(straight)
    for round_no in (1, 2):
        a, b = _adapter_weights(tmp_path / "straight", round_no), _adapter_weights(tmp_path / "killed", round_no)
        assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]) for k in a)
    assert not policy_dir(tmp_path / "killed", 1).with_suffix(".tmp").exists()


def test_resume_with_other_settings_is_refused(model, tokenizer, stories, small_seal, tmp_path):
    seal = small_seal(rounds=1, other_inner_text_row=False, control_round=False)
    run_adapt(Config(), seal, model, tokenizer, tmp_path, stories, log=quiet)
    # More rounds extend the run; a different inner learning rate would mix two experiments.
    seal.rounds = 2
    run_adapt(Config(), seal, model, tokenizer, tmp_path, stories, log=quiet)
    assert [r["round"] for r in read_records(tmp_path / "adapt.jsonl") if r["type"] == "round"] == [0, 1, 2]
    with pytest.raises(UserError, match="holds a SEAL run with different settings"):
        seal.inner_lr = 0.5
        run_adapt(Config(), seal, model, tokenizer, tmp_path, stories)
    assert json.loads((tmp_path / "adapt.jsonl").read_text().splitlines()[0])["type"] == "edit"


def test_selection_against_the_passage_scores_training_passages(model, tokenizer, stories, small_seal, tmp_path):
    seal = small_seal(rounds=1, select_against="passage", other_inner_text_row=False, control_round=False)
    records = read_records(run_adapt(Config(), seal, model, tokenizer, tmp_path, stories, log=quiet))
    passage = {r["context_id"]: r["reward"] for r in records
               if r["type"] == "edit" and r["split"] == "train" and r["method"] == "passage"}
    assert len(passage) == 2
    train = [r for r in records if r["type"] == "edit" and r["split"] == "train" and r["method"] == "self_edit"]
    candidates = {c: [r for r in train if r["context_id"] == c] for c in passage}
    kept = next(r for r in records if r["type"] == "round" and r["round"] == 1)["kept_edits"]
    assert kept == {c: candidates[c][i]["sample"] for c, i in select_edits(candidates, passage).items()}


def test_long_context_models_still_measure_forgetting(tokenizer, stories, small_seal, tmp_path):
    # A GPT-2 import has 1024 positions; the forgetting set must not need 1024-token stretches.
    from tinygpt_mlx.config import ModelConfig
    from tinygpt_mlx.model import TinyGPT
    from tinygpt_mlx.seal.adapt import Adapter

    big = TinyGPT(ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=1024), tokenizer.vocab_size)
    adapter = Adapter(Config(), small_seal(), big, tokenizer, tmp_path, stories, log=quiet)
    assert adapter.scorer.windows is not None and adapter.scorer.windows.shape[1] == 129
