"""The SEAL outer loop: round 0 scores the baselines and the base policy, rounds 1..R run ReST^EM.

Round 0, on the held-out contexts: no adaptation, the context in the prompt (the in-context upper bound),
training on the passage, the base model's self-edits (with the configured inner-loop text and, as a
row beside it, the other one), and a frozen-policy control (the base policy with fresh sampling seeds).
Round r: the current policy writes k self-edits per training context, the inner loop scores each, the
best rewarded one per context is kept, the policy is fine-tuned on (prompt -> kept edit ids), saved to
policy/round-r/, and evaluated on the held-out contexts.

Common random numbers: a held-out self-edit's sampling seed depends on (seed, context, sample) and every
inner loop's LoRA seeds on (seed, context), never on the round or the method, so rows differ by the
policy alone (the control, by its fresh sampling seeds alone). Every record is a function of its seeds,
so a resumed run replays the records it finds and computes the rest: a run killed anywhere ends with the
records of a run never killed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tinygpt_mlx.config import Config
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.seal import cloze
from tinygpt_mlx.seal.config import SealConfig, dump_seal_config
from tinygpt_mlx.seal.edits import SelfEdit, inner_ids, prompt_ids, sample_edit
from tinygpt_mlx.seal.inner import InnerLoop
from tinygpt_mlx.seal.records import RecordLog, record_key
from tinygpt_mlx.seal.rest import finetune_policy, make_policy, save_policy, select_edits
from tinygpt_mlx.seal.reward import Scorer, continuation_loss, general_windows
from tinygpt_mlx.seal.task import Item, build_task, derive_seed
from tinygpt_mlx.tokenizers import Tokenizer

RUN_CONFIG = "seal_config.yaml"
FORGET_WINDOW = 128  # tokens per window of the forgetting set
# Keys that may change between an interrupted run and its resume: more rounds, the run folder named another
# way. The checkpoint (init_from) may not: a resume from other weights would mix two experiments.
RESUMABLE_KEYS = ("rounds", "run_dir")
DISABLED = ("SEAL is disabled in this config; set `seal.enabled: true` in its `seal` section "
            "(or pass --override seal.enabled=true) to run `tinygpt seal adapt`")
PASSAGE_EDIT, EDIT_ALONE = "passage+edit", "edit"


def policy_dir(run_dir: Path, round_no: int) -> Path:
    """Where the policy after round round_no is saved."""
    return run_dir / "policy" / f"round-{round_no}"


def _check_run_config(run_dir: Path, cfg: Config, seal: SealConfig) -> None:
    """Write seal_config.yaml, or refuse to resume a run made with different settings."""
    path = run_dir / RUN_CONFIG
    current = dump_seal_config(cfg, seal)
    if path.is_file():
        old, new = yaml.safe_load(path.read_text()), yaml.safe_load(current)
        for key in RESUMABLE_KEYS:
            old["seal"].pop(key, None), new["seal"].pop(key, None)
        if old != new:
            raise UserError(f"{run_dir} holds a SEAL run with different settings ({path}); "
                            "resume it with the same config or pick a new --run_dir")
    path.write_text(current)


class Adapter:
    """One SEAL run: the task, the scorer, the inner loop and the record log, with a method per round."""

    def __init__(self, cfg: Config, seal: SealConfig, model: TinyGPT, tokenizer: Tokenizer, run_dir: Path,
                 stories: list[str], log: Callable[[str], None]):
        self.seal, self.model, self.tok, self.run_dir, self.log = seal, model, tokenizer, run_dir, log
        self.seed = seal.seed if seal.seed is not None else cfg.runtime.seed
        self.task = build_task(stories, seal, self.seed)
        enc, items = tokenizer.encode, self.task.train + self.task.heldout
        # Contexts and targets are cropped in tokens and decoded back, so prompts, cloze items and scores agree.
        self.context = {it.id: tokenizer.decode(enc(it.context)[: seal.max_context_tokens]) for it in items}
        self.target = {it.id: enc(it.target)[: seal.max_target_tokens] for it in items}
        self.index = {it.id: i for split in (self.task.train, self.task.heldout) for i, it in enumerate(split)}
        self.neutral = enc(seal.neutral_prompt) or [tokenizer.eos_id]
        # Short windows: a few stories fill several of them even for GPT-2's 1024 positions.
        windows = general_windows([enc(s) for s in self.task.forget], tokenizer.eos_id,
                                  min(model.max_seq_len, FORGET_WINDOW))
        model.eval()
        self.scorer = Scorer(model, self.neutral, windows, seal.forget_weight)
        self.inner = InnerLoop(model, self.scorer, seal, cfg)
        self.base_loss = {k: self.scorer.target_loss(t) for k, t in self.target.items()}
        self._cloze_batches(stories)
        self.records = RecordLog(run_dir)
        self.done: dict[tuple, dict] = {}

    def _cloze_batches(self, stories: list[str]) -> None:
        """Per held-out context, its cloze items without and with the context in the prompt."""
        freq = cloze.doc_freq(stories)
        letters = cloze.letter_tokens(self.tok) if self.seal.cloze_items else None
        self.cloze, self.cloze_in_context, self.cloze_count = {}, {}, {}
        for it in self.task.heldout:
            context, target = self.context[it.id], self.tok.decode(self.target[it.id])
            items = cloze.make_items(context, target, freq, self.seal.cloze_max_doc_freq, self.seal.cloze_items)
            self.cloze_count[it.id] = len(items)
            for batches, lead, before in ((self.cloze, self.neutral, ""),
                                          (self.cloze_in_context, [self.tok.eos_id], context + " ")):
                pairs = [cloze.cloze_ids(self.tok, lead, before + c.prefix, c.word) for c in items]
                batches[it.id] = cloze.build_batch(pairs, self.model.max_seq_len, letters, self.tok.eos_id)

    def lora_seeds(self, item: Item) -> list[int]:
        """The inner loop's LoRA seeds for item: the same for every method and round."""
        return [derive_seed(self.seed, "lora", item.id, j) for j in range(self.seal.lora_seeds)]

    def _once(self, key: dict, compute: Callable[[], dict]) -> dict:
        """The record for key: replayed from the log when a resumed run has it, else computed and appended."""
        item_key = record_key({"type": "edit", **key})
        if item_key in self.done:
            return self.done[item_key]
        start = time.perf_counter()
        result = compute()
        record = {"type": "edit", **key, "base_target_loss": self.base_loss[key["context_id"]], **result,
                  "wall_s": round(time.perf_counter() - start, 3)}
        if key["split"] == "heldout":
            record["cloze_items"] = self.cloze_count[key["context_id"]]
        self.records.append(record)
        self.done[item_key] = record
        return record

    def _adapt(self, item: Item, train_ids: list[int]) -> dict:
        cloze_batch = self.cloze.get(item.id)
        return self.inner.adapt(train_ids, self.target[item.id], self.base_loss[item.id], self.lora_seeds(item),
                                cloze_batch)

    def _sample(self, policy: TinyGPT, item: Item, sample: int, seed: int) -> SelfEdit:
        template = self.seal.templates[(self.index[item.id] + sample) % len(self.seal.templates)]
        return sample_edit(policy, self.tok, self.context[item.id], template, self.seal.edit_max_tokens,
                           self.seal.edit_temperature, self.seal.edit_top_p, seed)

    def _edit_records(self, policy: TinyGPT, round_no: int, split: str, method: str, item: Item, sample: int,
                      seed: int, texts: tuple[str, ...]) -> list[dict]:
        """Sample one self-edit (only if some record needs it) and inner-loop it with each inner text."""
        edit: list[SelfEdit] = []

        def compute(text: str) -> dict:
            if not edit:
                edit.append(self._sample(policy, item, sample, seed))
            e = edit[0]
            ids = inner_ids(e, self.tok, include_context=text == PASSAGE_EDIT)
            return {"template": e.template, "edit": e.text, "edit_ids": e.ids, **self._adapt(item, ids)}

        return [self._once({"round": round_no, "split": split, "method": method, "inner_text": text,
                            "context_id": item.id, "sample": sample}, lambda t=text: compute(t))
                for text in texts]

    def _texts(self, both: bool) -> tuple[str, ...]:
        main = PASSAGE_EDIT if self.seal.include_context else EDIT_ALONE
        other = EDIT_ALONE if main == PASSAGE_EDIT else PASSAGE_EDIT
        return (main, other) if both else (main,)

    def _baseline(self, item: Item, split: str, method: str) -> dict:
        def compute() -> dict:
            if method == "passage":
                return self._adapt(item, [self.tok.eos_id, *self.tok.encode(self.context[item.id])])
            if method == "in_context":
                prompt = [self.tok.eos_id, *self.tok.encode(self.context[item.id])]
                target = self.tok.encode(" " + self.tok.decode(self.target[item.id]))
                loss = continuation_loss(self.model, prompt, target)
                delta = self.base_loss[item.id] - loss
                acc = cloze.accuracy(self.model, self.cloze_in_context.get(item.id))
            else:  # none
                loss, delta, acc = self.base_loss[item.id], 0.0, cloze.accuracy(self.model, self.cloze.get(item.id))
            return {"inner_steps": 0, "rank": 0, "train_tokens": 0, "target_loss": loss, "delta_loss": delta,
                    "forgetting": 0.0, "reward": delta, "seed_rewards": [], "cloze_acc": acc, "grid": []}

        return self._once({"round": 0, "split": split, "method": method, "context_id": item.id, "sample": 0},
                          compute)

    def evaluate(self, policy: TinyGPT, round_no: int, method: str = "self_edit", both: bool = False) -> float:
        """Self-edits of policy on the held-out contexts, recorded; returns their mean reward."""
        tag = "control" if method == "control" else "eval"  # the control's fresh sampling seeds
        rewards = []
        for item in self.task.heldout:
            for sample in range(self.seal.eval_edits):
                seed = derive_seed(self.seed, tag, item.id, sample)
                records = self._edit_records(policy, round_no, "heldout", method, item, sample, seed,
                                             self._texts(both))
                rewards.append(records[0]["reward"])
        mean = sum(rewards) / len(rewards)
        self.log(f"round {round_no}: held-out {method.replace('_', '-')} reward {mean:+.4f} nats/token")
        return mean

    def round_zero(self) -> None:
        """Baselines, the base policy's self-edits and the frozen-policy control."""
        start = time.perf_counter()
        splits = [("heldout", self.task.heldout, ("none", "in_context", "passage"))]
        if self.seal.select_against == "passage":  # the filter compares training edits with the passage
            splits.insert(0, ("train", self.task.train, ("passage",)))
        for split, items, methods in splits:
            for method in methods:
                for item in items:
                    self._baseline(item, split, method)
                self.log(f"round 0: {method.replace('_', '-')} on {len(items)} {split} contexts done")
        policy = make_policy(self.model, self.seal, self.seed)
        heldout = self.evaluate(policy, 0, both=self.seal.other_inner_text_row)
        if self.seal.control_round:
            self.evaluate(policy, 0, method="control")
        self.records.append({"type": "round", "round": 0, "heldout_reward": heldout, "kept": 0,
                             "wall_s": round(time.perf_counter() - start, 3)})

    def round(self, round_no: int) -> None:
        """One ReST^EM round: sample, filter, fine-tune and save the policy, evaluate on held-out."""
        start = time.perf_counter()
        seal = self.seal
        previous = policy_dir(self.run_dir, round_no - 1) if round_no > 1 else None
        policy = make_policy(self.model, seal, self.seed, previous)
        candidates: dict[str, list[dict]] = {}
        for item in self.task.train:
            for sample in range(seal.k_edits):
                seed = derive_seed(self.seed, "edit", round_no, item.id, sample)  # new draws each round
                candidates.setdefault(item.id, []).extend(
                    self._edit_records(policy, round_no, "train", "self_edit", item, sample, seed, self._texts(False)))
        against = self._passage_rewards() if seal.select_against == "passage" else None
        kept = select_edits(candidates, against)
        # The policy learns the ids it sampled, after the prompt it sampled them from.
        pairs = [(prompt_ids(self.tok, candidates[c][i]["template"], self.context[c]), candidates[c][i]["edit_ids"])
                 for c, i in kept.items()]
        policy_loss = finetune_policy(policy, pairs, seal, derive_seed(self.seed, "policy", round_no),
                                      self.tok.eos_id)
        tuned = f"policy loss {policy_loss:.4f}" if pairs else "policy unchanged"
        self.log(f"round {round_no}: kept {len(pairs)}/{len(self.task.train)} contexts, {tuned}")
        # Save to a temporary folder and rename: a half-written policy folder never looks finished.
        final = policy_dir(self.run_dir, round_no)
        tmp = final.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_policy(policy, seal, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        heldout = self.evaluate(policy, round_no)
        train_rewards = [r["reward"] for rs in candidates.values() for r in rs]
        self.records.append({"type": "round", "round": round_no, "heldout_reward": heldout, "kept": len(pairs),
                             "kept_edits": {c: candidates[c][i]["sample"] for c, i in kept.items()},
                             "train_reward": sum(train_rewards) / len(train_rewards),
                             "policy_loss": None if policy_loss != policy_loss else policy_loss,
                             "wall_s": round(time.perf_counter() - start, 3)})

    def _passage_rewards(self) -> dict[str, float]:
        return {r["context_id"]: r["reward"] for r in self.done.values()
                if r["split"] == "train" and r["method"] == "passage"}

    def run(self) -> None:
        """Every round not finished yet, replaying the records the log already holds."""
        records = self.records.resume()
        finished = {r["round"] for r in records if r["type"] == "round"}
        self.done = {record_key(r): r for r in records if r["type"] == "edit"}
        if records:
            self.log(f"resuming: {len(self.done)} records found, rounds {sorted(finished) or 'none'} finished")
        if 0 not in finished:
            self.round_zero()
        for round_no in range(1, self.seal.rounds + 1):
            if round_no not in finished:
                self.round(round_no)


def run_adapt(cfg: Config, seal: SealConfig, model: TinyGPT, tokenizer: Tokenizer, run_dir: str | Path,
              stories: list[str], log: Callable[[str], None] = print) -> Path:
    """Run (or resume) SEAL into run_dir; returns the path of adapt.jsonl."""
    if not seal.enabled:
        raise UserError(DISABLED)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_config(run_dir, cfg, seal)
    adapter = Adapter(cfg, seal, model, tokenizer, run_dir, stories, log)
    adapter.run()
    return adapter.records.path
