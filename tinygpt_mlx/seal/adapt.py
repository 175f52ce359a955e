"""The SEAL outer loop: round 0 measures the baselines, rounds 1..R run ReST^EM on the self-edit policy.

Round 0, on every training and held-out context: no adaptation, training on the context itself, and
(held-out only) self-edits written by the base model. Round r: the current policy writes k self-edits
per training context, the inner loop scores each, the rewarded best ones are kept, the policy is
fine-tuned on (prompt -> kept edit), saved to policy/round-r/, and evaluated on the held-out contexts.
Every random draw has its own seed derived from (seed, round, context, sample), so a resumed run
repeats a straight run record for record.
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
from tinygpt_mlx.seal.config import SealConfig, dump_seal_config
from tinygpt_mlx.seal.edits import sample_edit, training_text
from tinygpt_mlx.seal.inner import inner_loop, pick
from tinygpt_mlx.seal.records import RecordLog
from tinygpt_mlx.seal.rest import finetune_policy, make_policy, save_policy, select_edits
from tinygpt_mlx.seal.reward import Scorer, general_windows
from tinygpt_mlx.seal.task import Item, build_task, derive_seed
from tinygpt_mlx.tokenizers import Tokenizer

RUN_CONFIG = "seal_config.yaml"
FORGET_WINDOW = 128  # tokens per window of the forgetting set
# Keys that may change between an interrupted run and its resume: more rounds, the run folder named another
# way. The checkpoint (init_from) may not: a resume from other weights would mix two experiments.
RESUMABLE_KEYS = ("rounds", "run_dir")
DISABLED = ("SEAL is disabled in this config; set `seal.enabled: true` in its `seal` section "
            "(or pass --override seal.enabled=true) to run `tinygpt seal adapt`")


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
    """One SEAL run: the task, the scorer and the record log, with a method per kind of record."""

    def __init__(self, cfg: Config, seal: SealConfig, model: TinyGPT, tokenizer: Tokenizer, run_dir: Path,
                 stories: list[str], log: Callable[[str], None]):
        self.seal, self.model, self.tok, self.run_dir, self.log = seal, model, tokenizer, run_dir, log
        self.seed = seal.seed if seal.seed is not None else cfg.runtime.seed
        self.task = build_task(stories, seal, self.seed)
        enc = tokenizer.encode
        # Contexts are cropped in tokens and decoded back, so prompts and training text agree.
        self.context = {it.id: tokenizer.decode(enc(it.context)[: seal.max_context_tokens])
                        for it in self.task.train + self.task.heldout}
        self.target = {it.id: enc(it.target)[: seal.max_target_tokens] for it in self.task.train + self.task.heldout}
        neutral = enc(seal.neutral_prompt) or [tokenizer.eos_id]
        # Short windows: a few stories fill several of them even for GPT-2's 1024 positions.
        windows = general_windows([enc(s) for s in self.task.forget], tokenizer.eos_id,
                                  min(model.max_seq_len, FORGET_WINDOW))
        model.eval()
        self.scorer = Scorer(model, neutral, windows, seal.forget_weight)
        self.base_loss = {k: self.scorer.target_loss(t) for k, t in self.target.items()}
        self.records = RecordLog(run_dir)

    def _adapt(self, item: Item, text: str, seed: int) -> dict:
        """Inner-loop one training text for item; the reward fields are read at the chosen budget."""
        train_ids = [self.tok.eos_id, *self.tok.encode(text)]
        grid = inner_loop(self.model, train_ids, self.scorer, self.target[item.id], self.base_loss[item.id],
                          self.seal, seed)
        point = pick(grid, max(self.seal.inner_steps), self.seal.chosen_rank)
        return {"inner_steps": point["steps"], "rank": point["rank"], "train_tokens": len(train_ids) - 1,
                **{k: point[k] for k in ("target_loss", "delta_loss", "forgetting", "reward")}, "grid": grid}

    def _record(self, round_no: int, split: str, method: str, item: Item, result: dict, start: float,
                **extra: object) -> dict:
        return {"type": "edit", "round": round_no, "split": split, "method": method, "context_id": item.id,
                **extra, "base_target_loss": self.base_loss[item.id], **result,
                "wall_s": round(time.perf_counter() - start, 3)}

    def baselines(self) -> None:
        """Round 0: no adaptation and train-on-context on every context, base self-edits on held-out."""
        start_round = time.perf_counter()
        for split, items in (("train", self.task.train), ("heldout", self.task.heldout)):
            for item in items:
                none = {"inner_steps": 0, "rank": 0, "train_tokens": 0, "target_loss": self.base_loss[item.id],
                        "delta_loss": 0.0, "forgetting": 0.0, "reward": 0.0, "grid": []}
                self.records.append(self._record(0, split, "none", item, none, time.perf_counter()))
                start = time.perf_counter()
                result = self._adapt(item, self.context[item.id], derive_seed(self.seed, "context", item.id))
                self.records.append(self._record(0, split, "context", item, result, start, edit=self.context[item.id]))
            self.log(f"round 0: baselines on {len(items)} {split} contexts done")
        policy = make_policy(self.model, self.seal)
        heldout = self.evaluate(policy, 0)
        self.records.append({"type": "round", "round": 0, "heldout_reward": heldout, "kept": 0,
                             "wall_s": round(time.perf_counter() - start_round, 3)})

    def _edit(self, policy: TinyGPT, item: Item, round_no: int, sample: int, tag: str) -> tuple[dict, list, list]:
        """Sample one self-edit with policy and inner-loop it; (record fields, prompt ids, edit ids)."""
        start = time.perf_counter()
        template = self.seal.templates[sample % len(self.seal.templates)]
        edit = sample_edit(policy, self.tok, self.context[item.id], template, self.seal.edit_max_tokens,
                           self.seal.edit_temperature, self.seal.edit_top_p,
                           derive_seed(self.seed, tag, round_no, item.id, sample))
        text = training_text(self.context[item.id], edit.text, self.seal.include_context)
        result = self._adapt(item, text, derive_seed(self.seed, tag + "-inner", round_no, item.id, sample))
        split = "train" if tag == "edit" else "heldout"
        record = self._record(round_no, split, "self_edit", item, result, start, sample=sample,
                              template=template, edit=edit.text)
        return record, edit.prompt, self.tok.encode(edit.text)

    def evaluate(self, policy: TinyGPT, round_no: int) -> float:
        """Self-edits of policy on the held-out contexts, recorded; returns their mean reward."""
        rewards = []
        for item in self.task.heldout:
            for sample in range(self.seal.eval_edits):
                record, _, _ = self._edit(policy, item, round_no, sample, "eval")
                self.records.append(record)
                rewards.append(record["reward"])
        mean = sum(rewards) / len(rewards)
        self.log(f"round {round_no}: held-out self-edit reward {mean:+.4f} nats/token")
        return mean

    def round(self, policy: TinyGPT, round_no: int, context_reward: dict[str, float]) -> None:
        """One ReST^EM round: sample, filter, fine-tune and save the policy, evaluate on held-out."""
        start_round = time.perf_counter()
        candidates: dict[str, list[dict]] = {}
        pairs: dict[str, list[tuple[list[int], list[int]]]] = {}
        for item in self.task.train:
            for sample in range(self.seal.k_edits):
                record, prompt, edit_ids = self._edit(policy, item, round_no, sample, "edit")
                candidates.setdefault(item.id, []).append(record)
                pairs.setdefault(item.id, []).append((prompt, edit_ids))
        kept = select_edits(candidates, context_reward)
        for context_id, records in candidates.items():
            for i, record in enumerate(records):
                self.records.append({**record, "kept": kept.get(context_id) == i})
        chosen = [pairs[c][i] for c, i in kept.items()]
        policy_loss = finetune_policy(policy, chosen, self.seal, derive_seed(self.seed, "policy", round_no),
                                      self.tok.eos_id)
        tuned = f"policy loss {policy_loss:.4f}" if chosen else "policy unchanged"
        self.log(f"round {round_no}: kept {len(chosen)}/{len(self.task.train)} contexts, {tuned}")
        # Save to a temporary folder and rename: a half-written policy folder never looks finished.
        final, tmp = policy_dir(self.run_dir, round_no), policy_dir(self.run_dir, round_no).with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_policy(policy, self.seal, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        heldout = self.evaluate(policy, round_no)
        train_rewards = [r["reward"] for rs in candidates.values() for r in rs]
        self.records.append({"type": "round", "round": round_no, "heldout_reward": heldout, "kept": len(chosen),
                             "train_reward": sum(train_rewards) / len(train_rewards),
                             "policy_loss": None if policy_loss != policy_loss else policy_loss,
                             "wall_s": round(time.perf_counter() - start_round, 3)})


def run_adapt(cfg: Config, seal: SealConfig, model: TinyGPT, tokenizer: Tokenizer, run_dir: str | Path,
              stories: list[str], log: Callable[[str], None] = print) -> Path:
    """Run (or resume) SEAL into run_dir; returns the path of adapt.jsonl."""
    if not seal.enabled:
        raise UserError(DISABLED)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_config(run_dir, cfg, seal)
    adapter = Adapter(cfg, seal, model, tokenizer, run_dir, stories, log)
    last = adapter.records.truncate_unfinished()
    if last >= 0:
        log(f"resuming after round {last}")
    else:
        adapter.baselines()
        last = 0
    context_reward = {r["context_id"]: r["reward"] for r in adapter.records.records()
                      if r["type"] == "edit" and r["method"] == "context" and r["split"] == "train"}
    policy = make_policy(model, seal, policy_dir(run_dir, last) if last >= 1 else None)
    for round_no in range(last + 1, seal.rounds + 1):
        adapter.round(policy, round_no, context_reward)
    return adapter.records.path
