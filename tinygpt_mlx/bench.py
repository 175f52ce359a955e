"""Throughput of TinyGPT on this machine: training step, prefill and KV-cache decode; FLOPs, MFU, memory.

For each (model size, sequence length) the bench runs the product's own code paths:
- train: the compiled training step (forward + backward + clipping + AdamW with the decay mask), batch B,
  through `cpu.accelerate` as `tinygpt train` builds it (on the CPU: fused kernels, `cpu_threads` lanes);
- prefill: one forward pass over a [1, seq_len] prompt into a fresh KV cache (what `generate` does first);
- decode: greedy KV-cache decoding with generate.Generator from a prompt of seq_len // 2 tokens.
Warm-up steps (tracing, compilation, allocator growth) are excluded; the median of the timed repeats is
reported. Peak memory is MLX's allocator peak during each phase (mx.reset_peak_memory before it).

FLOPs per token follow Kaplan et al.: training 6 N + 6 n_layers seq d_model, plus the tied head 6 d V
(model.flops_per_token with include_head); a forward pass is a third of that. Achieved FLOP/s divided by
the machine's measured fp32 GEMM rate (a square matmul of size gemm_n, envinfo.measure_gemm_gflops) is
the MFU: the share of what this machine's matmul actually delivers, not of a datasheet peak.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx

from tinygpt_mlx.config import CHOICES, Config, ModelConfig, check_choice
from tinygpt_mlx.model import TinyGPT, count_params_closed_form, flops_per_token

SCHEMA = "tinygpt-bench/1"

# (d_model, n_layers, n_heads); parameter counts at a 65-token vocabulary and max_seq_len 1024.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 2),  # ~0.17 M
    "small": (128, 4, 4),  # ~0.93 M
    "base": (256, 4, 4),  # ~3.4 M (3.2 M at seq 256), the reference shape
    "medium": (384, 6, 6),  # ~11.1 M
    "large": (512, 8, 8),  # ~25.8 M
}
DTYPES = ("float32", "bfloat16")


@dataclass
class BenchSettings:
    sizes: list[str] = field(default_factory=lambda: ["base"])
    seq_lens: list[int] = field(default_factory=lambda: [256])
    batch: int = 16
    tokens: int = 0
    """Tokens per training step; when set, each case's batch is tokens // seq_len (at least 1), not `batch`."""
    steps: int = 5
    """Timed repeats per measurement; the median is reported."""
    warmup: int = 2
    dtype: str = "float32"
    vocab: int = 65
    decode_tokens: int = 64
    """New tokens per decode measurement (fewer if the context would overflow)."""
    gemm_n: int = 2048
    phases: list[str] = field(default_factory=lambda: ["train", "prefill", "decode"])
    arch: str = "gpt2"
    """model.arch of every size: gpt2 or llama."""

    def validate(self) -> list[str]:
        problems = [f"unknown size {s!r} (choose from {', '.join(SIZES)})" for s in self.sizes if s not in SIZES]
        problems += [f"sequence length must be at least 2, got {t}" for t in self.seq_lens if t < 2]
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch < 1 or self.steps < 1 or self.warmup < 0 or self.tokens < 0:
            problems.append("batch and steps must be >= 1, warmup and tokens >= 0")
        problems += [f"unknown phase {p!r} (train, prefill, decode)" for p in self.phases
                     if p not in ("train", "prefill", "decode")]
        if not (self.sizes and self.seq_lens and self.phases):
            problems.append("sizes, sequence lengths and phases must each name at least one value")
        if self.vocab < 1 or self.decode_tokens < 1 or self.gemm_n < 1:
            problems.append("vocab, decode tokens and gemm n must be >= 1")
        problems += check_choice("arch", self.arch, CHOICES["model.arch"])
        return problems

    def batch_for(self, seq_len: int) -> int:
        """The training batch at this sequence length (fixed, or tokens // seq_len)."""
        return max(1, self.tokens // seq_len) if self.tokens else self.batch


def model_config(size: str, seq_len: int, arch: str = "gpt2") -> ModelConfig:
    d, n_layers, n_heads = SIZES[size]
    return ModelConfig(arch=arch, d_model=d, n_layers=n_layers, n_heads=n_heads, max_seq_len=seq_len)


def median_time(fn, steps: int, warmup: int) -> tuple[float, list[float]]:
    """Median seconds of fn() over `steps` calls after `warmup` untimed ones, and every timing."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _peak_mb() -> float:
    return mx.get_peak_memory() / 2**20


def bench_train(cfg: ModelConfig, s: BenchSettings, gemm_gflops: float) -> dict:
    """Tokens/s of the compiled training step (through cpu.accelerate) at batch s.batch_for(seq_len)."""
    from tinygpt_mlx.cpu import accelerate
    from tinygpt_mlx.train.optim import build_optimizer
    from tinygpt_mlx.train.step import make_train_step

    run = Config()
    run.model = cfg
    run.runtime.precision = s.dtype
    run.schedule.warmup_steps = 0
    T = cfg.max_seq_len
    batch = run.data.batch_size = s.batch_for(T)
    mx.random.seed(0)
    model = TinyGPT(cfg, s.vocab)
    model, step = accelerate(model, make_train_step(model, build_optimizer(run, 1_000_000), run), run)
    x = mx.random.randint(0, s.vocab, (batch, T), key=mx.random.key(1))
    y = mx.roll(x, -1, axis=1)
    mx.eval(x, y, model.parameters())

    def one():
        loss, _, _ = step(x, y)
        mx.eval(loss, step.state)

    mx.reset_peak_memory()
    seconds, times = median_time(one, s.steps, s.warmup)
    tokens = batch * T
    fpt = flops_per_token(cfg, s.vocab, T, include_head=True)
    achieved = fpt * tokens / seconds / 1e9
    return {"tokens_per_s": tokens / seconds, "step_ms": seconds * 1e3, "step_ms_all": [t * 1e3 for t in times],
            "flops_per_token": fpt, "achieved_gflops": achieved, "mfu": achieved / gemm_gflops,
            "peak_memory_mb": _peak_mb(), "cpu_threads": step.lanes.size if hasattr(step, "lanes") else 1}


def _inference_model(cfg: ModelConfig, s: BenchSettings) -> TinyGPT:
    mx.random.seed(0)
    model = TinyGPT(cfg, s.vocab)
    if s.dtype != "float32":
        model.set_dtype(getattr(mx, s.dtype))
    model.eval()
    mx.eval(model.parameters())
    return model


def bench_prefill(cfg: ModelConfig, s: BenchSettings, gemm_gflops: float) -> dict:
    """Tokens/s of one forward pass over a [1, seq_len] prompt into a fresh KV cache."""
    model = _inference_model(cfg, s)
    T = cfg.max_seq_len
    prompt = mx.random.randint(0, s.vocab, (1, T), key=mx.random.key(2))
    mx.eval(prompt)

    def one():
        mx.eval(model(prompt, model.make_cache())[:, -1, :])

    mx.reset_peak_memory()
    seconds, _ = median_time(one, s.steps, s.warmup)
    fpt = flops_per_token(cfg, s.vocab, T, include_head=True) / 3  # forward only
    achieved = fpt * T / seconds / 1e9
    return {"tokens_per_s": T / seconds, "ms": seconds * 1e3, "prompt_tokens": T, "flops_per_token": fpt,
            "achieved_gflops": achieved, "mfu": achieved / gemm_gflops, "peak_memory_mb": _peak_mb()}


def bench_decode(cfg: ModelConfig, s: BenchSettings) -> dict:
    """Greedy KV-cache decode tokens/s (generate.Generator) after a prompt of seq_len // 2 tokens."""
    from tinygpt_mlx.generate import Generator

    model = _inference_model(cfg, s)
    T = cfg.max_seq_len
    prompt_len = max(1, T // 2)
    new_tokens = max(2, min(s.decode_tokens, T - prompt_len))
    prompt = mx.random.randint(0, s.vocab, (prompt_len,), key=mx.random.key(3)).tolist()

    def one() -> float:
        gen = Generator(model, prompt, new_tokens, temperature=0.0)
        for _ in gen:
            pass
        return gen.stats.decode_tokens_per_s

    mx.reset_peak_memory()
    for _ in range(max(1, s.warmup)):
        one()
    rates = [one() for _ in range(s.steps)]
    rate = statistics.median(rates)
    return {"tokens_per_s": rate, "ms_per_token": 1e3 / rate if rate else None, "prompt_tokens": prompt_len,
            "new_tokens": new_tokens, "peak_memory_mb": _peak_mb()}


def run_bench(s: BenchSettings, progress=None) -> dict:
    """Every (size, seq_len) case of the settings; a JSON-able record with the machine description."""
    from tinygpt_mlx.envinfo import environment_record, measure_gemm_gflops

    problems = s.validate()
    if problems:
        raise ValueError("; ".join(problems))
    # The best of three medians: on a shared machine a single figure is easily dragged down by other
    # work, which would inflate the MFU (the step timings are medians too, so this errs low, not high).
    gemm = max(measure_gemm_gflops(n=s.gemm_n, repeats=5) for _ in range(3))
    results = []
    for size in s.sizes:
        for T in s.seq_lens:
            cfg = model_config(size, T, s.arch)
            case = {"size": size, "arch": s.arch, "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                    "params": count_params_closed_form(cfg, s.vocab),
                    "non_embedding_params": count_params_closed_form(cfg, s.vocab, non_embedding=True),
                    "seq_len": T, "batch": s.batch_for(T), "dtype": s.dtype}
            if progress:
                progress(f"{size} seq {T}")
            if "train" in s.phases:
                case["train"] = bench_train(cfg, s, gemm)
            if "prefill" in s.phases:
                case["prefill"] = bench_prefill(cfg, s, gemm)
            if "decode" in s.phases:
                case["decode"] = bench_decode(cfg, s)
            results.append(case)
            mx.clear_cache()
    return {"schema": SCHEMA, "environment": environment_record(), "gemm_fp32_gflops": gemm,
            "gemm_n": s.gemm_n, "settings": asdict(s), "results": results}


def plot_bench(record: dict, path: str) -> None:
    """Training tokens/s and peak memory against sequence length, one line per model size (PNG)."""
    from tinygpt_mlx.plotting import new_figure, save_figure

    fig, (ax_speed, ax_mem) = new_figure(figsize=(11, 4.2), ncols=2)
    by_size: dict[str, list[dict]] = {}
    for case in record["results"]:
        if "train" in case:
            by_size.setdefault(case["size"], []).append(case)
    for size, cases in by_size.items():
        seqs = [c["seq_len"] for c in cases]
        label = f"{size} ({cases[0]['params'] / 1e6:.1f}M)"
        ax_speed.plot(seqs, [c["train"]["tokens_per_s"] for c in cases], marker="o", label=label)
        ax_mem.plot(seqs, [c["train"]["peak_memory_mb"] for c in cases], marker="o", label=label)
    for ax, title, ylabel in ((ax_speed, "training tokens/s", "tokens/s"), (ax_mem, "training peak memory", "MB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_speed.legend(fontsize=8)
    env = record["environment"]
    settings = record["settings"]
    batch = f"{settings['tokens']} tokens per step" if settings.get("tokens") else f"batch {settings['batch']}"
    fig.suptitle(f"tinygpt bench: {env['device']}/{env['backend']}, {batch}, {settings['dtype']}", fontsize=10)
    out = Path(path)
    save_figure(fig, out.parent, out.stem, (out.suffix.lstrip(".") or "png",))
