"""`tinygpt bench`: training, prefill and decode throughput, FLOPs, MFU and peak memory on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from tinygpt_mlx.cli.common import app, console
from tinygpt_mlx.errors import UserError


def _split(text: str, cast=str) -> list:
    try:
        return [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError as err:
        raise UserError(f"could not read the list {text!r}: {err}") from None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command("bench")
def bench(
    sizes: str = typer.Option("base", "--sizes", help="Comma list of tiny, small, base, medium, large."),
    seq_len: str = typer.Option("256", "--seq-len", "--seq_len", help="Comma list of sequence lengths."),
    batch: int = typer.Option(16, "--batch", help="Training batch size."),
    tokens: int = typer.Option(0, "--tokens", help="Tokens per training step: batch = tokens // seq len (0: use --batch)."),
    steps: int = typer.Option(5, "--steps", help="Timed repeats per measurement (median reported)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up repeats (compilation)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    vocab: int = typer.Option(65, "--vocab", help="Vocabulary size (65 = a character vocabulary)."),
    phases: str = typer.Option("train,prefill,decode", "--phases", help="Comma list of train, prefill, decode."),
    decode_tokens: int = typer.Option(64, "--decode-tokens", help="New tokens per decode measurement."),
    gemm_n: int = typer.Option(2048, "--gemm-n", help="Matrix size of the fp32 GEMM peak measurement."),
    json_out: str = typer.Option(None, "--json", help="Write the full record (with the machine) here."),
    plot: str = typer.Option(None, "--plot", help="Write a tokens/s + memory vs sequence length PNG here."),
    arch: str = typer.Option("gpt2", "--arch", help="Model architecture of every size: gpt2 or llama."),
) -> None:
    """Tokens/s of a compiled training step, prefill and KV-cache decode; FLOPs, MFU, peak memory."""
    from tinygpt_mlx.bench import BenchSettings, model_config, plot_bench, run_bench
    from tinygpt_mlx.memory import check_fits
    from tinygpt_mlx.paths import check_output_file

    settings = BenchSettings(sizes=_split(sizes), seq_lens=_split(seq_len, int), batch=batch, tokens=tokens, steps=steps,
                             warmup=warmup, dtype=dtype, vocab=vocab, decode_tokens=decode_tokens, gemm_n=gemm_n,
                             phases=_split(phases), arch=arch)
    problems = settings.validate()
    if problems:
        raise UserError("; ".join(problems))
    for path, option in ((json_out, "--json"), (plot, "--plot")):
        if path:
            check_output_file(path, option)  # now, not after minutes of benchmarking
    training = "train" in settings.phases
    for size, T in ((size, T) for size in settings.sizes for T in settings.seq_lens):
        check_fits(model_config(size, T, arch), vocab, settings.batch_for(T) if training else 1, T, training,
                   f"bench size {size} at sequence length {T}")
    with console.status("benchmarking") as status:
        record = run_bench(settings, progress=lambda text: status.update(f"benchmarking {text}"))

    env = record["environment"]
    table = Table(title=f"tinygpt bench: {env['device']}/{env['backend']}, {dtype}, "
                        f"{f'{tokens} tokens per step' if tokens else f'batch {batch}'}; "
                        f"fp32 GEMM {record['gemm_fp32_gflops']:.0f} GFLOP/s")
    for column in ("size", "params", "seq", "batch", "train tok/s", "step ms", "GFLOP/s", "MFU", "train MB",
                   "prefill tok/s", "decode tok/s"):
        table.add_column(column, justify="right")
    for case in record["results"]:
        tr, pf, dc = case.get("train", {}), case.get("prefill", {}), case.get("decode", {})
        table.add_row(case["size"], f"{case['params'] / 1e6:.2f}M", str(case["seq_len"]), str(case["batch"]),
                      _fmt(tr.get("tokens_per_s"), ",.0f"), _fmt(tr.get("step_ms"), ".0f"),
                      _fmt(tr.get("achieved_gflops"), ".1f"), _fmt(tr.get("mfu"), ".0%"),
                      _fmt(tr.get("peak_memory_mb"), ",.0f"), _fmt(pf.get("tokens_per_s"), ",.0f"),
                      _fmt(dc.get("tokens_per_s"), ",.0f"))
    console.print(table)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        with open(json_out, "w") as f:
            json.dump(record, f, indent=2)
        console.print(f"wrote {json_out}")
    if plot:
        plot_bench(record, plot)
        console.print(f"wrote {plot}")
