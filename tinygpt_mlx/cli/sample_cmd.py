"""`tinygpt sample`: stream generations from a checkpoint to the terminal."""

from __future__ import annotations

import math
import sys

import typer

from tinygpt_mlx.cli.common import app, console, err_console
from tinygpt_mlx.config import check_seed
from tinygpt_mlx.errors import UserError


def sampling_problems(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int,
                      num_samples: int, seed: int | None) -> list[str]:
    """Every out-of-range sampling option, as the flags spell them."""
    problems = []
    if not math.isfinite(temperature):
        problems.append(f"--temperature must be a finite number (0 = greedy), got {temperature}")
    elif temperature < 0:
        problems.append(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        problems.append(f"--top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        problems.append(f"--top-p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if num_samples < 1:
        problems.append(f"--num-samples must be at least 1, got {num_samples}")
    return problems + check_seed("--seed", seed)


@app.command("sample")
def sample(
    checkpoint: str = typer.Option(..., "--checkpoint",
                                   help="Step folder, last/best link, or run folder (its last)."),
    prompt: str = typer.Option("Once upon a time", "--prompt",
                               help="Text to continue (empty: start from EOS)."),
    temperature: float = typer.Option(0.8, "--temperature", help="0 means greedy."),
    top_k: int = typer.Option(None, "--top-k", "--top_k", help="Keep only the k most likely tokens."),
    top_p: float = typer.Option(None, "--top-p", "--top_p",
                                help="Nucleus: keep the smallest set with mass p."),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", "--max_new_tokens",
                                       help="Tokens to generate (fewer if EOS comes first)."),
    seed: int = typer.Option(None, "--seed",
                             help="Sample i uses seed + i: the same seed gives the same text."),
    num_samples: int = typer.Option(1, "--num-samples", "--num_samples", help="Generations to print."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print prefill and decode tokens/s."),
) -> None:
    """Generate from a checkpoint with its own tokenizer, streaming tokens as they come; stops at EOS."""
    problems = sampling_problems(temperature, top_k, top_p, max_new_tokens, num_samples, seed)
    if problems:
        raise UserError("; ".join(problems))
    from tinygpt_mlx.generate import Generator, encode_prompt, prompt_notices, stream_text
    from tinygpt_mlx.train.checkpoint import load_for_inference

    model, tokenizer, _, state = load_for_inference(checkpoint)
    for note in prompt_notices(tokenizer, prompt, model.max_seq_len):
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for i in range(num_samples):
        sample_seed = None if seed is None else seed + i
        if num_samples > 1:
            console.print(f"[dim]--- sample {i + 1}/{num_samples}"
                          + (f" (seed {sample_seed})" if sample_seed is not None else "") + " ---[/]")
        gen = Generator(model, encode_prompt(tokenizer, prompt), max_new_tokens, temperature, top_k, top_p,
                        sample_seed, tokenizer.eos_id)
        sys.stdout.write(prompt)
        for piece in stream_text(tokenizer, gen):
            sys.stdout.write(piece)
            sys.stdout.flush()  # show each token as it arrives
        sys.stdout.write("\n")
        sys.stdout.flush()
        if verbose:
            s = gen.stats
            console.print(f"[dim]step {state['step']} | prefill {s.prompt_tokens} tokens, "
                          f"{s.prefill_tokens_per_s:,.1f} tok/s | decode {s.generated_tokens} tokens, "
                          f"{s.decode_tokens_per_s:,.1f} tok/s[/]", highlight=False)
