"""The training loop, top to bottom: start state, data, model, compiled step, loop, evals, checkpoints.

`train(cfg)` is what `tinygpt train` calls. A run folder (checkpoint.save_dir) ends up with
`run_config.yaml`, `env.json`, `metrics.jsonl`, `step-NNNNNNN/` checkpoints and the `last` / `best` links.
Resuming is exact: the checkpoint carries weights, optimizer state (with its step), the python / numpy /
mlx RNG states, the batch sampler's position and the loop's counters, so 20 + 20 steps equal 40.
Under `mlx.launch` (distributed.py) every rank runs this same loop on its share of each global batch;
only rank 0 writes files or prints, and every wait on the other ranks is bounded by a watchdog.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from tinygpt_mlx import kernels
from tinygpt_mlx.config import Config, ConfigError, check_vocab, dump_config
from tinygpt_mlx.data.loader import BatchSampler, TokenFile, eval_windows, shard, windows
from tinygpt_mlx.data.prepare import prepare_data
from tinygpt_mlx.device import on_accelerator, precision_notice, select_device
from tinygpt_mlx.distributed import NullLog, World
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.generate import generate_text
from tinygpt_mlx.loss import cross_entropy_loss
from tinygpt_mlx.model import TinyGPT
from tinygpt_mlx.train import checkpoint as ckpt_io
from tinygpt_mlx.train.metrics import (
    METRICS_FILE,
    MetricsLog,
    Reporter,
    bits_per_byte,
    perplexity,
    truncate_after,
)
from tinygpt_mlx.train.optim import build_optimizer
from tinygpt_mlx.train.signals import StopRequest
from tinygpt_mlx.train.step import make_train_step

# Architecture fields that shape the weights: changing one of them on resume cannot work.
BEST_BY = ("val_loss", "val_ppl", "val_bpb")  # eval metrics, all lower-is-better
ARCH_FIELDS = ("name", "d_model", "n_layers", "n_heads", "max_seq_len", "tie_embeddings", "bias",
               "hidden_dim", "layer_norm_eps")


@dataclass
class TrainResult:
    """What a finished (or interrupted) run leaves behind."""

    run_dir: Path
    step: int
    total_steps: int
    tokens_seen: int
    losses: dict[int, float] = field(default_factory=dict)  # step -> train loss, for steps run in this call
    val_loss: float | None = None
    val_bpb: float | None = None
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    exit_code: int = 0  # 130 / 143 after SIGINT / SIGTERM, else 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and mlx's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def total_steps_for(cfg: Config, train_tokens: int) -> int:
    """schedule.max_steps, or epochs x train tokens / tokens per optimizer step."""
    if cfg.schedule.max_steps is not None:
        return cfg.schedule.max_steps
    per_step = cfg.data.batch_size * cfg.data.block_size * cfg.runtime.grad_accum_steps
    return max(1, math.ceil(cfg.schedule.epochs * train_tokens / per_step))


def check_compatible(saved: Config, cfg: Config, saved_vocab: int, vocab: int, what: str) -> None:
    """Refuse to continue from a checkpoint whose architecture or optimizer differs from cfg."""
    changed = [f"model.{name} {getattr(saved.model, name)} -> {getattr(cfg.model, name)}"
               for name in ARCH_FIELDS if getattr(saved.model, name) != getattr(cfg.model, name)]
    if saved_vocab != vocab:
        changed.append(f"vocabulary {saved_vocab} -> {vocab}")
    if what == "resume" and saved.optim.optimizer != cfg.optim.optimizer:
        changed.append(f"optim.optimizer {saved.optim.optimizer} -> {cfg.optim.optimizer}")
    if changed:
        raise UserError(f"cannot {what} from a checkpoint with a different architecture: {'; '.join(changed)}")


def _find_start(run_dir: Path, resume: str | None, reporter_msg: Any) -> ckpt_io.Checkpoint | None:
    if resume is None:
        if ckpt_io.step_folders(run_dir):
            raise UserError(f"{run_dir} already holds checkpoints; pass --resume auto to continue it "
                            "or choose another --save_dir")
        return None
    path = ckpt_io.find_resume(run_dir) if resume == "auto" else ckpt_io.resolve_checkpoint(resume)
    if path is None:
        reporter_msg(f"no complete checkpoint in {run_dir}; starting from step 0")
        return None
    ckpt = ckpt_io.load_checkpoint(path)
    if "sampler" not in ckpt.state:  # e.g. an imported GPT-2: weights without a training state
        raise UserError(f"{ckpt.path} holds weights only (no training state to resume); "
                        "start from it with --init-from instead")
    return ckpt


class Batches:
    """Training batches [accum, B / world_size, T]: this rank's rows of each global batch, with the state."""

    def __init__(self, tokens: np.ndarray, sampler: BatchSampler, accum: int, rank: int = 0, world_size: int = 1):
        self.tokens, self.sampler, self.accum = tokens, sampler, accum
        self.rank, self.world_size = rank, world_size

    def next(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(x, y, sampler state before this batch): saving that state makes resume redraw this batch."""
        state = self.sampler.state_dict()
        pairs = [self.sampler.next_batch(self.tokens) for _ in range(self.accum)]
        x = np.stack([shard(p[0], self.rank, self.world_size) for p in pairs])
        return x, np.stack([shard(p[1], self.rank, self.world_size) for p in pairs]), state


def evaluate(model: TinyGPT, x: np.ndarray, y: np.ndarray, n_bytes: int, batch_size: int,
             world: World | None = None) -> dict[str, float]:
    """Mean validation loss, perplexity and bits per byte on the pinned windows (no dropout).

    With a world of several ranks each rank scores its share of the windows and the sums are added up.
    """
    model.eval()
    total = mx.array(0.0)
    rows = world.rows(len(x)) if world is not None else slice(0, len(x))
    for i in range(rows.start, rows.stop, batch_size):
        end = min(i + batch_size, rows.stop)
        logits = model(mx.array(x[i:end]))
        total = total + cross_entropy_loss(logits, mx.array(y[i:end]), reduction="sum")
        mx.eval(total)
    if world is not None:
        total = world.sum(total)
    model.train()
    sum_nats = total.item()
    mean = sum_nats / y.size
    return {"val_loss": mean, "val_ppl": perplexity(mean), "val_bpb": bits_per_byte(sum_nats, n_bytes)}


def target_bytes(tokenizer: Any, y: np.ndarray) -> int:
    """UTF-8 bytes of the text the targets spell; each end-of-text separator counts as one byte."""
    n_eos = int((y == tokenizer.eos_id).sum())
    text = "".join(tokenizer.decode([t for t in row.tolist() if t != tokenizer.eos_id]) for row in y)
    return len(text.encode("utf-8")) + n_eos


@dataclass
class RunInputs:
    """What both backends' loops start from: tokens, the sampler, pinned validation windows, the weights' source."""

    tokenizer: Any
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    sampler: BatchSampler
    batches: Batches
    total_steps: int
    tokens_per_step: int
    val_x: np.ndarray
    val_y: np.ndarray
    val_bytes: int
    source: ckpt_io.Checkpoint | None
    what: str
    """`resume` or `initialize`: how the source is used, for error messages."""
    vocab: int


def run_inputs(cfg: Config, data: Any, start: ckpt_io.Checkpoint | None, init_from: str | None, say: Any,
               rank: int = 0, world_size: int = 1) -> RunInputs:
    """Token files, sampler, validation windows and the checkpoint the weights come from (if any)."""
    tokenizer = data.tokenizer
    check_vocab(cfg, tokenizer.vocab_size)
    train_tokens = TokenFile(data.train_path).tokens
    val_tokens = TokenFile(data.val_path).tokens
    block, batch = cfg.data.block_size, cfg.data.batch_size
    sampler = BatchSampler(len(train_tokens), batch, block, cfg.runtime.seed)
    # Pinned validation windows: the same tokens at every eval, in every run and resume.
    val_x, val_y = windows(val_tokens, eval_windows(len(val_tokens), block, cfg.eval.eval_subset), block)

    # Weights come from a resumed checkpoint, an --init-from checkpoint (fine-tuning), or a fresh init.
    if start is not None and init_from:
        say("--resume given: ignoring --init-from (the checkpoint already holds the weights)")
    if start is not None:
        source, what = start, "resume"
    else:
        source, what = (ckpt_io.load_checkpoint(init_from) if init_from else None), "initialize"
    if source is not None and source.tokenizer_fingerprint != tokenizer.fingerprint:
        raise UserError(f"cannot {what} from {source.path}: its tokenizer differs from this run's "
                        f"(data.tokenizer = {cfg.data.tokenizer}); use the data and tokenizer it was trained with")
    return RunInputs(
        tokenizer=tokenizer,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        sampler=sampler,
        batches=Batches(train_tokens, sampler, cfg.runtime.grad_accum_steps, rank, world_size),
        total_steps=total_steps_for(cfg, len(train_tokens)),
        tokens_per_step=batch * block * cfg.runtime.grad_accum_steps,
        val_x=val_x,
        val_y=val_y,
        val_bytes=target_bytes(tokenizer, val_y),
        source=source,
        what=what,
        # A null model.vocab_size keeps the checkpoint's vocabulary (it may be padded past the tokenizer's).
        vocab=cfg.model.vocab_size or (source.vocab_size if source is not None else tokenizer.vocab_size),
    )


def train(cfg: Config, resume: str | None = None, init_from: str | None = None,
          live: bool | None = None) -> TrainResult:
    """Train cfg's model; `resume` is 'auto' or a checkpoint path, `init_from` a checkpoint for weights only."""
    world = World.init()  # the ranks of an mlx.launch, or a world of one
    if cfg.runtime.backend == "torch" and world.size > 1:
        raise UserError("runtime.backend torch does not run under mlx.launch; use the mlx backend for "
                        "data-parallel training")
    if cfg.runtime.backend == "torch":  # the PyTorch path: imported only here, so torch stays optional
        from tinygpt_mlx.torch import require_torch

        require_torch()
        from tinygpt_mlx.torch.trainer import train as train_torch

        return train_torch(cfg, resume=resume, init_from=init_from, live=live)
    if cfg.checkpoint.best_by not in BEST_BY:
        raise ConfigError([f"checkpoint.best_by = {cfg.checkpoint.best_by!r} is not one of {', '.join(BEST_BY)}"])
    select_device(cfg.runtime.device)
    world.check_batch(cfg.data.batch_size)
    run_dir = Path(cfg.checkpoint.save_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    quiet = None if world.is_main else open(os.devnull, "w")  # only rank 0 prints
    say = Reporter(0, live=False, stream=quiet).message  # plain messages until the bar exists
    start = _find_start(run_dir, resume, say)
    notice = precision_notice(cfg.runtime, on_accelerator())
    if notice:
        say(notice)
    if mx.default_device().type == mx.DeviceType.cpu:
        # A machine's first run compiles the CPU kernels (~15 s): now, before any rank waits on another.
        kernels.load()

    # Seeds first: model init and dropout draw from mlx's generator; a resume overwrites them below.
    seed_everything(cfg.runtime.seed)
    # Rank 0 prepares (or finds) the token files first, so ranks sharing a disk never write them together.
    if not world.is_main:
        world.barrier("data preparation", watched=False)
    data = prepare_data(cfg)
    if world.is_main:
        world.barrier("data preparation", watched=False)
    inputs = run_inputs(cfg, data, start, init_from, say, world.rank, world.size)
    tokenizer, train_tokens, sampler, batches = inputs.tokenizer, inputs.train_tokens, inputs.sampler, inputs.batches
    total_steps, tokens_per_step = inputs.total_steps, inputs.tokens_per_step
    source, what, vocab = inputs.source, inputs.what, inputs.vocab
    val_x, val_y, val_bytes = inputs.val_x, inputs.val_y, inputs.val_bytes
    batch = cfg.data.batch_size
    model = TinyGPT(cfg.model, vocab)
    optimizer = build_optimizer(cfg, total_steps)
    if source is not None:
        check_compatible(source.cfg, cfg, source.vocab_size, vocab, what)
        model.load_weights(list(source.weights.items()), strict=True)

    step, tokens_seen, elapsed_before = 0, 0, 0.0
    best: dict[str, Any] = {"metric": cfg.checkpoint.best_by, "value": None, "step": None}
    nonfinite = {"consecutive": 0, "total": 0}
    loss_scale: dict[str, Any] | None = None
    if start is not None:
        # Restore everything the next step depends on, before the compiled step captures the state.
        start.restore_optimizer(optimizer)
        state = start.state
        step, tokens_seen, elapsed_before = state["step"], state["tokens_seen"], state.get("elapsed_s", 0.0)
        best, nonfinite, loss_scale = state["best"], state["nonfinite"], state.get("loss_scale")
        if best.get("metric") != cfg.checkpoint.best_by:  # a new best_by starts its own record
            best = {"metric": cfg.checkpoint.best_by, "value": None, "step": None}
        sampler.load_state_dict(state["sampler"])
        ckpt_io.restore_rng(state["rng"])
        dropped = truncate_after(run_dir / METRICS_FILE, step) if world.is_main else 0
        say(f"resuming from {start.path} at step {step}"
            + (f" ({dropped} metric lines past it dropped)" if dropped else ""))
    elif world.is_main:
        truncate_after(run_dir / METRICS_FILE, 0)  # lines of a run that died before its first checkpoint
    world.check_same({"tokenizer": tokenizer.fingerprint, "training tokens": len(train_tokens),
                      "validation tokens": len(inputs.val_tokens), "vocabulary": vocab, "start step": step})
    # Identical weights on every rank even where the seeded init could differ by an ulp across machines.
    model.update(world.broadcast(model.parameters(), "the start-up weight broadcast"))
    world.decorrelate_rng()  # after the init and the restore, which must match on every rank
    train_step = make_train_step(model, optimizer, cfg, group=world.group)
    if loss_scale is not None:
        train_step.scaler["scale"] = mx.array(loss_scale["scale"], mx.float32)
        train_step.scaler["good_steps"] = mx.array(loss_scale["good_steps"], mx.int32)
    mx.eval(model.parameters(), optimizer.state)

    if world.is_main:
        dump_config(cfg, run_dir / "run_config.yaml")
        from tinygpt_mlx.envinfo import environment_record

        (run_dir / "env.json").write_text(json.dumps(environment_record(), indent=2) + "\n")

    metrics = MetricsLog(run_dir) if world.is_main else NullLog()
    reporter = Reporter(total_steps, step, live=live if world.is_main else False, stream=quiet)
    result = TrainResult(run_dir, step, total_steps, tokens_seen)
    ranks = f" on {world.size} ranks ({batch // world.size} sequences each per micro-batch)" if world.size > 1 else ""
    reporter.message(f"training {model.num_params():,} parameters for {total_steps} steps "
                     f"({tokens_per_step:,} tokens/step){ranks} into {run_dir}")

    def save(new_best: bool) -> None:
        if not world.is_main:
            return
        folder = ckpt_io.save_checkpoint(run_dir, step, model, optimizer, cfg, tokenizer, {
            "step": step, "tokens_seen": tokens_seen, "elapsed_s": elapsed_before + time.time() - t_start,
            "total_steps": total_steps, "rng": ckpt_io.capture_rng(), "sampler": sampler_state,
            "best": best, "nonfinite": nonfinite,
            "loss_scale": {"scale": train_step.loss_scale, "good_steps": train_step.scaler["good_steps"].item()},
        })
        result.last_checkpoint = folder
        if new_best:
            ckpt_io.update_link(run_dir, "best", folder)
            result.best_checkpoint = folder
        ckpt_io.rotate_checkpoints(run_dir, cfg.checkpoint.keep_last_k)

    t_start = time.time()
    train_s, steps_since_log = 0.0, 0  # step time only: evals and saves stay out of tokens/s
    x, y, sampler_state = batches.next()
    with StopRequest() as stop:
        try:
            # A signal seen by any rank stops every rank after the same step (one tiny all_max per step).
            while step < total_steps and not world.max_int(stop.signum or 0, f"the stop check at step {step}"):
                t0 = time.perf_counter()
                with world.watch(f"step {step + 1}", warmup=step == result.step):
                    loss, grad_norm, ok = train_step(mx.array(x), mx.array(y))
                    mx.async_eval(train_step.state, loss, grad_norm, ok)
                    # Build the next batch on the host while the step runs.
                    x, y, next_state = batches.next()
                    finite = ok.item()  # waits for the step, and so for the other ranks' gradients
                step += 1
                # Exact without a reduction: every rank ran B / world_size full windows of the global batch.
                tokens_seen += tokens_per_step
                sampler_state = next_state  # the state that redraws the next batch, for checkpoints
                if finite:
                    nonfinite["consecutive"] = 0
                else:
                    _on_nonfinite(cfg, step, loss.item(), grad_norm.item(), nonfinite, reporter)
                result.losses[step] = loss.item()
                train_s += time.perf_counter() - t0
                steps_since_log += 1

                if step % cfg.runtime.log_interval == 0 or step == total_steps:
                    step_s = train_s / steps_since_log
                    record = metrics.write(
                        "train", step=step, tokens_seen=tokens_seen, loss=loss.item(),
                        lr=_lr(optimizer), grad_norm=grad_norm.item(),
                        tokens_per_sec=tokens_per_step / step_s, step_ms=1000 * step_s,
                        peak_memory_bytes=mx.get_peak_memory(),
                        elapsed_s=round(elapsed_before + time.time() - t_start, 3))
                    reporter.train(record, eta_s=(total_steps - step) * step_s)
                    train_s, steps_since_log = 0.0, 0

                new_best = False
                if step % cfg.eval.eval_every == 0 or step == total_steps:
                    with world.watch(f"the eval at step {step}", warmup=result.val_loss is None):
                        scores = evaluate(model, val_x, val_y, val_bytes, batch, world=world)
                    record = metrics.write("eval", step=step, tokens_seen=tokens_seen, **scores)
                    reporter.eval(record)
                    result.val_loss, result.val_bpb = scores["val_loss"], scores["val_bpb"]
                    if world.is_main:
                        _samples(cfg, model, tokenizer, step, metrics, reporter)
                    value = scores[cfg.checkpoint.best_by]
                    if best["value"] is None or value < best["value"]:
                        best, new_best = {"metric": cfg.checkpoint.best_by, "value": value, "step": step}, True

                # A new best gets its own checkpoint so that `best` always points at those exact weights.
                if step % cfg.checkpoint.save_every == 0 or step == total_steps or new_best or stop.requested:
                    save(new_best)
            if world.size > 1:  # adopt the signal any rank received, so all stop, save and exit alike
                stop.signum = world.max_int(stop.signum or 0, "the final stop check") or None
            if stop.requested and (result.last_checkpoint is None or ckpt_io.step_of(result.last_checkpoint) != step):
                save(False)  # a signal before the first step: still leave a checkpoint to resume
        finally:
            reporter.close()
            metrics.close()
    if stop.requested and world.is_main:
        print(f"stopped by signal {stop.signum} at step {step}; checkpoint {result.last_checkpoint}; "
              f"continue with --resume auto", flush=True)
    result.step, result.tokens_seen, result.exit_code = step, tokens_seen, stop.exit_code
    if (run_dir / "best").is_symlink():
        result.best_checkpoint = run_dir / os.readlink(run_dir / "best")
    return result


def _lr(optimizer: Any) -> float:
    return float(optimizer.learning_rate.item())


def _on_nonfinite(cfg: Config, step: int, loss: float, grad_norm: float, counts: dict[str, int],
                  reporter: Reporter) -> None:
    """The step's update was already withheld by the step's guard; decide whether to go on."""
    counts["consecutive"] += 1
    counts["total"] += 1
    what = f"non-finite loss or gradient at step {step} (loss {loss}, grad_norm {grad_norm})"
    if cfg.runtime.nonfinite == "abort":
        raise UserError(f"{what}; weights were not updated. Lower optim.lr or set runtime.nonfinite: skip")
    if counts["consecutive"] >= cfg.runtime.max_nonfinite:
        raise UserError(f"{what}: {counts['consecutive']} bad steps in a row "
                        f"(runtime.max_nonfinite = {cfg.runtime.max_nonfinite}); giving up")
    reporter.message(f"warning: {what}; update skipped ({counts['consecutive']} in a row)")


def _samples(cfg: Config, model: TinyGPT, tokenizer: Any, step: int, metrics: MetricsLog,
             reporter: Reporter) -> None:
    """sample_n generations; seeded from (seed, step, i) so they never touch the training RNG."""
    e = cfg.eval
    for i in range(e.sample_n):
        text = generate_text(model, tokenizer, e.sample_prompt, e.sample_max_new_tokens, e.sample_temperature,
                             e.sample_top_k, e.sample_top_p, seed=cfg.runtime.seed * 1_000_003 + step * 101 + i)
        metrics.write("sample", step=step, text=e.sample_prompt + text)
        reporter.sample(step, e.sample_prompt + text)
