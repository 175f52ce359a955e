"""The training loop, top to bottom, for both backends: start state, data, model and step, loop, evals, checkpoints.

`train(cfg)` is what `tinygpt train` calls. A run folder (checkpoint.save_dir) ends up with
`run_config.yaml`, `env.json`, `metrics.jsonl`, `step-NNNNNNN/` checkpoints and the `last` / `best` links.
The backend (train/backend.py for MLX, torch/backend.py for PyTorch) supplies the model, the optimizer
and the step; everything else here is shared, so either backend continues the other's checkpoints.
Resuming is exact: a checkpoint carries the arrays and the TrainState (train/state.py), so 20 + 20
steps equal 40. Under `mlx.launch` (distributed.py) every rank runs this same loop on its share of each
global batch; only rank 0 writes files or prints, and every wait on the other ranks is bounded by a watchdog.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from tinygpt_mlx.config import Config, ConfigError, dump_config
from tinygpt_mlx.data.prepare import prepare_data
from tinygpt_mlx.distributed import World
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.generate import generate_text
from tinygpt_mlx.memory import check_training_fits
from tinygpt_mlx.paths import folder_lock, output_dir
from tinygpt_mlx.train import checkpoint as ckpt_io
from tinygpt_mlx.train.backend import Backend, MLXBackend
from tinygpt_mlx.train.inputs import RunInputs, run_inputs
from tinygpt_mlx.train.metrics import METRICS_FILE, MetricsLog, NullLog, Reporter, truncate_after
from tinygpt_mlx.train.signals import StopRequest
from tinygpt_mlx.train.state import TrainState

BEST_BY = ("val_loss", "val_ppl", "val_bpb")  # eval metrics, all lower-is-better


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


@dataclass
class Run:
    """What the loop works with, built once by `train`."""

    cfg: Config
    world: World
    backend: Backend
    inputs: RunInputs
    state: TrainState
    metrics: MetricsLog | NullLog
    reporter: Reporter
    result: TrainResult
    started: float
    """time.time() minus the seconds earlier calls trained this run, so `elapsed()` carries across resumes."""

    def elapsed(self) -> float:
        """Wall time this run has trained, over every call."""
        return time.time() - self.started


def train(cfg: Config, resume: str | None = None, init_from: str | None = None,
          live: bool | None = None) -> TrainResult:
    """Train cfg's model; `resume` is 'auto' or a checkpoint path, `init_from` a checkpoint for weights only."""
    world = World.init()  # the ranks of an mlx.launch, or a world of one
    check_training_fits(cfg, world.size)  # before a folder, a token file or an array exists
    # One trainer per run folder: another one's saves would delete this one's temporary folders. Only rank 0
    # creates (and, when it fails, removes) the folder: the other ranks of an mlx.launch only read from it.
    owned = world.is_main
    with output_dir(cfg.checkpoint.save_dir, "checkpoint.save_dir") if owned else \
            nullcontext(Path(cfg.checkpoint.save_dir)) as run_dir, \
            folder_lock(run_dir, "training into") if owned else nullcontext():
        run = start_run(cfg, world, resume, init_from, live)
        with StopRequest() as stop:
            try:
                loop(run, stop)
            finally:
                run.reporter.close()
                run.metrics.close()
    state, result = run.state, run.result
    if stop.requested and run.world.is_main:
        print(f"stopped by signal {stop.signum} at step {state.step}; checkpoint {result.last_checkpoint}; "
              f"continue with --resume auto", flush=True)
    result.step, result.tokens_seen, result.exit_code = state.step, state.tokens_seen, stop.exit_code
    if (result.run_dir / "best").is_symlink():
        result.best_checkpoint = result.run_dir / os.readlink(result.run_dir / "best")
    return result


def start_run(cfg: Config, world: World, resume: str | None, init_from: str | None, live: bool | None) -> Run:
    """Everything up to the first step: backend, data, weights, restored state, run files, console."""
    if cfg.checkpoint.best_by not in BEST_BY:
        raise ConfigError([f"checkpoint.best_by = {cfg.checkpoint.best_by!r} is not one of {', '.join(BEST_BY)}"])
    run_dir = Path(cfg.checkpoint.save_dir)
    quiet = None if world.is_main else open(os.devnull, "w")  # only rank 0 prints
    say = Reporter(0, live=False, stream=quiet).message  # plain messages until the bar exists
    backend = make_backend(cfg, world, say)
    start = find_start(run_dir, resume, say)

    # Seeds first: model init and dropout draw from these generators; a resume overwrites them below.
    seed_everything(cfg.runtime.seed)
    inputs = run_inputs(cfg, prepare_data_once(cfg, world), start, init_from, say, world.rank, world.size)
    backend.build(inputs.vocab, inputs.total_steps, inputs.source.weights if inputs.source else None)
    state = TrainState(inputs.total_steps, cfg.checkpoint.best_by)
    if start is not None:
        check_steps_left(start, inputs.total_steps, say)
        restore(start, state, backend, inputs)
        dropped = truncate_after(run_dir / METRICS_FILE, state.step) if world.is_main else 0
        say(f"resuming from {start.path} at step {state.step}"
            + (f" ({dropped} metric lines past it dropped)" if dropped else ""))
    elif world.is_main:
        truncate_after(run_dir / METRICS_FILE, 0)  # lines of a run that died before its first checkpoint
    world.check_same({"tokenizer": inputs.tokenizer.fingerprint, "training tokens": len(inputs.train_tokens),
                      "validation tokens": len(inputs.val_tokens), "vocabulary": inputs.vocab,
                      "start step": state.step})
    backend.start(state.loss_scale)
    if world.is_main:
        write_run_files(cfg, run_dir, backend)

    reporter = Reporter(state.total_steps, state.step, live=live if world.is_main else False, stream=quiet)
    ranks = (f" on {world.size} ranks ({cfg.data.batch_size // world.size} sequences each per micro-batch)"
             if world.size > 1 else "")
    reporter.message(f"training {backend.num_params():,} parameters for {state.total_steps} steps "
                     f"({inputs.tokens_per_step:,} tokens/step){ranks}{backend.describe()} into {run_dir}")
    return Run(cfg, world, backend, inputs, state, MetricsLog(run_dir) if world.is_main else NullLog(), reporter,
               TrainResult(run_dir, state.step, state.total_steps, state.tokens_seen),
               started=time.time() - state.elapsed_s)


def make_backend(cfg: Config, world: World, say: Any) -> Backend:
    """The backend runtime.backend names; torch is imported only here, so it stays an optional extra."""
    if cfg.runtime.backend != "torch":
        return MLXBackend(cfg, world, say)
    if world.size > 1:
        raise UserError("runtime.backend torch does not run under mlx.launch; use the mlx backend for "
                        "data-parallel training")
    from tinygpt_mlx.torch import require_torch

    require_torch()
    from tinygpt_mlx.torch.backend import TorchBackend

    return TorchBackend(cfg)


def find_start(run_dir: Path, resume: str | None, say: Any) -> ckpt_io.Checkpoint | None:
    """The checkpoint `resume` names ('auto': the newest complete one), or None for a fresh start."""
    if resume is None:
        if ckpt_io.step_folders(run_dir):
            raise UserError(f"{run_dir} already holds checkpoints; pass --resume auto to continue it "
                            "or choose another --save_dir")
        return None
    path = ckpt_io.find_resume(run_dir) if resume == "auto" else ckpt_io.resolve_checkpoint(resume)
    if path is None:
        say(f"no complete checkpoint in {run_dir}; starting from step 0")
        return None
    ckpt = ckpt_io.load_checkpoint(path)
    if "sampler" not in ckpt.state:  # e.g. an imported GPT-2: weights without a training state
        raise UserError(f"{ckpt.path} holds weights only (no training state to resume); "
                        "start from it with --init-from instead")
    return ckpt


def check_steps_left(start: ckpt_io.Checkpoint, total_steps: int, say: Any) -> None:
    """Say so when the resumed run is already finished; refuse a step budget the run has passed."""
    if start.step > total_steps:
        raise UserError(f"cannot resume {start.path} at step {start.step} for schedule.max_steps {total_steps}: "
                        f"the run is already past it; pass --max-steps {start.step} or more to train further")
    if start.step == total_steps:
        say(f"nothing to do: {start.path} is at step {start.step} of schedule.max_steps {total_steps}; "
            "pass a larger --max-steps to train further")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and mlx's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def prepare_data_once(cfg: Config, world: World) -> Any:
    """prepare_data on rank 0 first, so ranks sharing a disk never write the token files together."""
    if not world.is_main:
        world.barrier("data preparation", watched=False)
    data = prepare_data(cfg)
    if world.is_main:
        world.barrier("data preparation", watched=False)
    return data


def restore(start: ckpt_io.Checkpoint, state: TrainState, backend: Backend, inputs: RunInputs) -> None:
    """Everything the next step depends on, as the checkpoint saved it, before the step is built."""
    state.load_state_dict(start.state)
    backend.restore_optimizer(start)
    inputs.sampler.load_state_dict(state.sampler)
    backend.set_rng_state(state.rng, state.step)


def write_run_files(cfg: Config, run_dir: Path, backend: Backend) -> None:
    """run_config.yaml (the resolved config) and env.json (machine, versions, BLAS)."""
    from tinygpt_mlx.envinfo import environment_record

    dump_config(cfg, run_dir / "run_config.yaml")
    env = {**environment_record(), **backend.env()}
    (run_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")


def loop(run: Run, stop: StopRequest) -> None:
    """Steps until total_steps or a stop signal, with logs, evals and checkpoints on their schedules."""
    cfg, state, world, result = run.cfg, run.state, run.world, run.result
    train_s, steps_since_log = 0.0, 0  # step time only: evals and saves stay out of tokens/s
    x, y, state.sampler = run.inputs.batches.next()
    # A signal seen by any rank stops every rank after the same step (one tiny all_max per step).
    while state.step < state.total_steps and not world.max_int(stop.signum or 0, f"the stop check at step {state.step}"):
        t0 = time.perf_counter()
        with world.watch(f"step {state.step + 1}", warmup=state.step == result.step):
            finish = run.backend.step(x, y)
            x, y, next_sampler = run.inputs.batches.next()  # the next batch, built while the step runs
            loss, grad_norm, ok = finish()  # waits for the step, and so for the other ranks' gradients
        state.step += 1
        # Exact without a reduction: every rank ran B / world_size full windows of the global batch.
        state.tokens_seen += run.inputs.tokens_per_step
        state.sampler = next_sampler  # the state that redraws the next batch, for checkpoints
        check_finite(cfg, state, ok, loss, grad_norm, run.reporter)
        result.losses[state.step] = loss
        train_s += time.perf_counter() - t0
        steps_since_log += 1

        last = state.step == state.total_steps
        if state.step % cfg.runtime.log_interval == 0 or last:
            log_train(run, loss, grad_norm, train_s / steps_since_log)
            train_s, steps_since_log = 0.0, 0
        new_best = (state.step % cfg.eval.eval_every == 0 or last) and run_eval(run)
        # A new best gets its own checkpoint so that `best` always points at those exact weights.
        if state.step % cfg.checkpoint.save_every == 0 or last or new_best or stop.requested:
            save(run, new_best)
    if world.size > 1:  # adopt the signal any rank received, so all stop, save and exit alike
        stop.signum = world.max_int(stop.signum or 0, "the final stop check") or None
    if stop.requested and (result.last_checkpoint is None or ckpt_io.step_of(result.last_checkpoint) != state.step):
        save(run, False)  # a signal before the first step: still leave a checkpoint to resume


def check_finite(cfg: Config, state: TrainState, ok: bool, loss: float, grad_norm: float,
                 reporter: Reporter) -> None:
    """Count a withheld update (the step's guard already kept the weights) and decide whether to go on."""
    if ok:
        state.nonfinite_in_a_row = 0
        return
    state.nonfinite_in_a_row += 1
    state.nonfinite_total += 1
    what = f"non-finite loss or gradient at step {state.step} (loss {loss}, grad_norm {grad_norm})"
    if cfg.runtime.nonfinite == "abort":
        raise UserError(f"{what}; weights were not updated. Lower optim.lr or set runtime.nonfinite: skip")
    if state.nonfinite_in_a_row >= cfg.runtime.max_nonfinite:
        raise UserError(f"{what}: {state.nonfinite_in_a_row} bad steps in a row "
                        f"(runtime.max_nonfinite = {cfg.runtime.max_nonfinite}); giving up")
    reporter.message(f"warning: {what}; update skipped ({state.nonfinite_in_a_row} in a row)")


def log_train(run: Run, loss: float, grad_norm: float, step_s: float) -> None:
    """A train record in metrics.jsonl and on the console; step_s is the mean step time since the last one."""
    state = run.state
    record = run.metrics.write(
        "train", step=state.step, tokens_seen=state.tokens_seen, loss=loss, lr=run.backend.learning_rate(),
        grad_norm=grad_norm, tokens_per_sec=run.inputs.tokens_per_step / step_s, step_ms=1000 * step_s,
        peak_memory_bytes=run.backend.peak_memory(), elapsed_s=round(run.elapsed(), 3))
    run.reporter.train(record, eta_s=(state.total_steps - state.step) * step_s)


def run_eval(run: Run) -> bool:
    """Validation scores (and samples, on rank 0) at this step; True when they set a new best."""
    state, inputs = run.state, run.inputs
    with run.world.watch(f"the eval at step {state.step}", warmup=run.result.val_loss is None):
        scores = run.backend.evaluate(inputs.val_x, inputs.val_y, inputs.val_bytes, run.cfg.data.batch_size)
    run.reporter.eval(run.metrics.write("eval", step=state.step, tokens_seen=state.tokens_seen, **scores))
    run.result.val_loss, run.result.val_bpb = scores["val_loss"], scores["val_bpb"]
    if run.world.is_main and run.cfg.eval.sample_n > 0:
        write_samples(run)
    return state.record_eval(scores[state.best_by])


def write_samples(run: Run) -> None:
    """sample_n generations; seeded from (seed, step, i) so they never touch the training RNG."""
    e, step, model = run.cfg.eval, run.state.step, run.backend.sampling_model()
    for i in range(e.sample_n):
        text = e.sample_prompt + generate_text(
            model, run.inputs.tokenizer, e.sample_prompt, e.sample_max_new_tokens, e.sample_temperature,
            e.sample_top_k, e.sample_top_p, seed=run.cfg.runtime.seed * 1_000_003 + step * 101 + i)
        run.metrics.write("sample", step=step, text=text)
        run.reporter.sample(step, text)


def save(run: Run, new_best: bool) -> None:
    """Checkpoint this step on rank 0: the backend's arrays and the TrainState; move `best`; rotate."""
    if not run.world.is_main:
        return
    state, result = run.state, run.result
    state.rng, state.loss_scale, state.elapsed_s = run.backend.rng_state(), run.backend.loss_scale(), run.elapsed()
    weights, optimizer_state = run.backend.arrays()
    folder = ckpt_io.save_checkpoint_arrays(result.run_dir, state.step, weights, optimizer_state, run.cfg,
                                            run.inputs.tokenizer, state.state_dict())
    result.last_checkpoint = folder
    if new_best:
        ckpt_io.update_link(result.run_dir, "best", folder)
        result.best_checkpoint = folder
    ckpt_io.rotate_checkpoints(result.run_dir, run.cfg.checkpoint.keep_last_k)
