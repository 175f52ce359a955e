"""The training loop on PyTorch (`runtime.backend: torch`): train/trainer.py's loop with a torch model and step.

Everything but the model and the step is shared with the MLX trainer: config, prepared data, the seeded
batch sampler, pinned eval windows, checkpoint folders (written through save_checkpoint_arrays with MLX's
weight and optimizer names), state.json, metrics.jsonl and the console. A checkpoint written here resumes
in MLX and the other way round. Fresh weights are the MLX model's for the same seed; generations at
eval time run through the MLX model (generate.py) holding the current torch weights.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch

from tinygpt_mlx.config import Config, ConfigError, dump_config
from tinygpt_mlx.data.prepare import prepare_data
from tinygpt_mlx.errors import UserError
from tinygpt_mlx.torch.model import TorchTinyGPT, from_mlx_init, load_mlx_weights, to_mlx
from tinygpt_mlx.torch.optim import LRSchedule, build_optimizer, state_from_mlx, state_to_mlx
from tinygpt_mlx.torch.step import TorchTrainStep, batch_to, cross_entropy_loss
from tinygpt_mlx.train import checkpoint as ckpt_io
from tinygpt_mlx.train.metrics import (
    METRICS_FILE,
    MetricsLog,
    Reporter,
    bits_per_byte,
    perplexity,
    truncate_after,
)
from tinygpt_mlx.train.signals import StopRequest
from tinygpt_mlx.train.trainer import (
    BEST_BY,
    TrainResult,
    _find_start,
    _on_nonfinite,
    _samples,
    check_compatible,
    run_inputs,
    seed_everything,
)


def pick_device(cfg: Config) -> torch.device:
    """runtime.device -> a torch device: auto takes CUDA when present; gpu without CUDA is a user error."""
    want = cfg.runtime.device
    if want == "gpu" and not torch.cuda.is_available():
        raise UserError("runtime.device gpu with --backend torch needs CUDA, and torch sees no CUDA device")
    return torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")


def torch_rng_state(device: torch.device) -> str:
    """torch's generator state(s) as one base64 string (state.json stays small and readable)."""
    states = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])
    return json.dumps([base64.b64encode(s.numpy().tobytes()).decode() for s in states])


def restore_torch_rng(text: str | None, device: torch.device, fallback_seed: int) -> None:
    """Put torch's generators back (a checkpoint from MLX has none: seed from fallback_seed instead)."""
    if text is None:
        torch.manual_seed(fallback_seed)
        return
    states = [torch.from_numpy(np.frombuffer(base64.b64decode(s), np.uint8).copy()) for s in json.loads(text)]
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


@torch.no_grad()
def evaluate(model: TorchTinyGPT, x: np.ndarray, y: np.ndarray, n_bytes: int, batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Mean validation loss, perplexity and bits per byte on the pinned windows, in float32, no dropout."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(x), batch_size):
        logits = model(batch_to(x[i : i + batch_size], device))
        total += cross_entropy_loss(logits, batch_to(y[i : i + batch_size], device), reduction="sum").double()
    model.train()
    sum_nats = float(total)
    mean = sum_nats / y.size
    return {"val_loss": mean, "val_ppl": perplexity(mean), "val_bpb": bits_per_byte(sum_nats, n_bytes)}


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # CPU: the process's peak RSS


def train(cfg: Config, resume: str | None = None, init_from: str | None = None,
          live: bool | None = None) -> TrainResult:
    """Train cfg's model with PyTorch; the same arguments, run folder and result as trainer.train."""
    if cfg.checkpoint.best_by not in BEST_BY:
        raise ConfigError([f"checkpoint.best_by = {cfg.checkpoint.best_by!r} is not one of {', '.join(BEST_BY)}"])
    device = pick_device(cfg)
    run_dir = Path(cfg.checkpoint.save_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    say = Reporter(0, live=False).message
    start = _find_start(run_dir, resume, say)

    # The same order as the MLX trainer, so a fresh run draws the same initial weights from mlx's generator.
    seed_everything(cfg.runtime.seed)
    torch.manual_seed(cfg.runtime.seed)
    data = prepare_data(cfg)
    inputs = run_inputs(cfg, data, start, init_from, say)
    tokenizer, sampler, batches = inputs.tokenizer, inputs.sampler, inputs.batches
    total_steps, tokens_per_step = inputs.total_steps, inputs.tokens_per_step
    source, what, vocab = inputs.source, inputs.what, inputs.vocab
    val_x, val_y, val_bytes = inputs.val_x, inputs.val_y, inputs.val_bytes
    batch = cfg.data.batch_size
    model = from_mlx_init(cfg.model, vocab).to(device)
    if source is not None:
        check_compatible(source.cfg, cfg, source.vocab_size, vocab, what)
        load_mlx_weights(model, source.weights)
    optimizer = build_optimizer(cfg, model)

    step, tokens_seen, elapsed_before, updates = 0, 0, 0.0, 0
    best: dict[str, Any] = {"metric": cfg.checkpoint.best_by, "value": None, "step": None}
    nonfinite = {"consecutive": 0, "total": 0}
    loss_scale: dict[str, Any] | None = None
    if start is not None:
        updates = state_from_mlx(optimizer, start.optimizer_state, str(start.path))
        state = start.state
        step, tokens_seen, elapsed_before = state["step"], state["tokens_seen"], state.get("elapsed_s", 0.0)
        best, nonfinite, loss_scale = state["best"], state["nonfinite"], state.get("loss_scale")
        if best.get("metric") != cfg.checkpoint.best_by:
            best = {"metric": cfg.checkpoint.best_by, "value": None, "step": None}
        sampler.load_state_dict(state["sampler"])
        ckpt_io.restore_rng(state["rng"])
        restore_torch_rng(state["rng"].get("torch"), device, cfg.runtime.seed * 1_000_003 + step)
        dropped = truncate_after(run_dir / METRICS_FILE, step)
        say(f"resuming from {start.path} at step {step}"
            + (f" ({dropped} metric lines past it dropped)" if dropped else ""))
    else:
        truncate_after(run_dir / METRICS_FILE, 0)
    train_step = TorchTrainStep(model, optimizer, LRSchedule(cfg, total_steps), cfg, device, updates)
    train_step.load_loss_scale(loss_scale)

    dump_config(cfg, run_dir / "run_config.yaml")
    from tinygpt_mlx.envinfo import environment_record

    env = {**environment_record(), "train_backend": "torch", "torch": torch.__version__, "torch_device": str(device)}
    (run_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")

    metrics = MetricsLog(run_dir)
    reporter = Reporter(total_steps, step, live=live)
    result = TrainResult(run_dir, step, total_steps, tokens_seen)
    reporter.message(f"training {model.num_params():,} parameters for {total_steps} steps "
                     f"({tokens_per_step:,} tokens/step) with torch on {device} into {run_dir}")
    sample_model: list[Any] = []  # the MLX twin for generations, built on first use

    def save(new_best: bool) -> None:
        rng = {**ckpt_io.capture_rng(), "torch": torch_rng_state(device)}
        folder = ckpt_io.save_checkpoint_arrays(
            run_dir, step, to_mlx(model.state_dict()),
            {k: mx.array(v) for k, v in state_to_mlx(optimizer, train_step.updates).items()}, cfg, tokenizer, {
                "step": step, "tokens_seen": tokens_seen, "elapsed_s": elapsed_before + time.time() - t_start,
                "total_steps": total_steps, "rng": rng, "sampler": sampler_state, "best": best,
                "nonfinite": nonfinite, "loss_scale": train_step.loss_scale,
            })
        result.last_checkpoint = folder
        if new_best:
            ckpt_io.update_link(run_dir, "best", folder)
            result.best_checkpoint = folder
        ckpt_io.rotate_checkpoints(run_dir, cfg.checkpoint.keep_last_k)

    t_start = time.time()
    train_s, steps_since_log = 0.0, 0
    x, y, sampler_state = batches.next()
    with StopRequest() as stop:
        try:
            while step < total_steps and not stop.requested:
                t0 = time.perf_counter()
                loss, grad_norm, ok = train_step(batch_to(x, device), batch_to(y, device))
                lr = optimizer.param_groups[0]["lr"]
                x, y, sampler_state = batches.next()
                step += 1
                tokens_seen += tokens_per_step
                if ok:
                    nonfinite["consecutive"] = 0
                else:
                    _on_nonfinite(cfg, step, loss, grad_norm, nonfinite, reporter)
                result.losses[step] = loss
                train_s += time.perf_counter() - t0
                steps_since_log += 1

                if step % cfg.runtime.log_interval == 0 or step == total_steps:
                    step_s = train_s / steps_since_log
                    record = metrics.write(
                        "train", step=step, tokens_seen=tokens_seen, loss=loss, lr=lr, grad_norm=grad_norm,
                        tokens_per_sec=tokens_per_step / step_s, step_ms=1000 * step_s,
                        peak_memory_bytes=_peak_memory(device),
                        elapsed_s=round(elapsed_before + time.time() - t_start, 3))
                    reporter.train(record, eta_s=(total_steps - step) * step_s)
                    train_s, steps_since_log = 0.0, 0

                new_best = False
                if step % cfg.eval.eval_every == 0 or step == total_steps:
                    scores = evaluate(model, val_x, val_y, val_bytes, batch, device)
                    record = metrics.write("eval", step=step, tokens_seen=tokens_seen, **scores)
                    reporter.eval(record)
                    result.val_loss, result.val_bpb = scores["val_loss"], scores["val_bpb"]
                    if cfg.eval.sample_n > 0:
                        _samples(cfg, _mlx_twin(sample_model, model, vocab), tokenizer, step, metrics, reporter)
                    value = scores[cfg.checkpoint.best_by]
                    if best["value"] is None or value < best["value"]:
                        best, new_best = {"metric": cfg.checkpoint.best_by, "value": value, "step": step}, True

                if step % cfg.checkpoint.save_every == 0 or step == total_steps or new_best or stop.requested:
                    save(new_best)
            if stop.requested and (result.last_checkpoint is None or ckpt_io.step_of(result.last_checkpoint) != step):
                save(False)
        finally:
            reporter.close()
            metrics.close()
    if stop.requested:
        print(f"stopped by signal {stop.signum} at step {step}; checkpoint {result.last_checkpoint}; "
              f"continue with --resume auto", flush=True)
    result.step, result.tokens_seen, result.exit_code = step, tokens_seen, stop.exit_code
    if (run_dir / "best").is_symlink():
        result.best_checkpoint = run_dir / os.readlink(run_dir / "best")
    return result


def _mlx_twin(cache: list[Any], model: TorchTinyGPT, vocab: int) -> Any:
    """The MLX TinyGPT holding model's current weights, so generations use generate.py unchanged."""
    from tinygpt_mlx.model import TinyGPT

    if not cache:
        # Building it draws init weights from mlx's generator; keep that off the training state's RNG.
        saved = mx.random.state[0]
        cache.append(TinyGPT(model.cfg, vocab))
        mx.random.seed((int(saved[0].item()) << 32) | int(saved[1].item()))
    twin = cache[0]
    twin.load_weights(list(to_mlx(model.state_dict()).items()), strict=True)
    twin.eval()
    return twin
