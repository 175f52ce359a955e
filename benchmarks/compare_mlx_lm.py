"""KV-cache decode tokens/s: TinyGPT's generate.Generator vs mlx-lm on the same weights, same process.

Run by hand (not a test):

    python benchmarks/compare_mlx_lm.py                       # reference shape, random weights
    python benchmarks/compare_mlx_lm.py --prompt 128 --new 128 --rounds 7 --json decode.json

mlx-lm side: TinyGPT's parameters loaded into `mlx_lm.models.gpt2.Model` (names match; mlx-lm wraps them
under `model.`), decoded with `mlx_lm.generate.generate_step`, the loop that `mlx_lm.generate` and
`stream_generate` run (they add only detokenization), greedy (argmax sampler). Our side: generate.Generator
at temperature 0. Both: prefill the same prompt, then `--new` tokens; decode tokens/s counts the tokens
after the first (the first comes from the prefill). The two alternate round by round; medians reported.
The greedy token streams are also compared (they must agree: same weights, same arithmetic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

# isort: off
import tinygpt_mlx  # noqa: F401 - loads the fast BLAS before mlx.core binds the slow one
import mlx.core as mx
# isort: on
from mlx.utils import tree_flatten

from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.generate import Generator
from tinygpt_mlx.model import TinyGPT


def mlx_lm_model(model: TinyGPT):
    from mlx_lm.models import gpt2

    cfg = model.cfg
    args = gpt2.ModelArgs(model_type="gpt2", n_ctx=cfg.max_seq_len, n_embd=cfg.d_model, n_head=cfg.n_heads,
                          n_layer=cfg.n_layers, n_positions=cfg.max_seq_len, layer_norm_epsilon=cfg.layer_norm_eps,
                          vocab_size=model.vocab_size)
    ref = gpt2.Model(args)
    ref.load_weights([("model." + k, v) for k, v in tree_flatten(model.parameters())])
    ref.eval()
    mx.eval(ref.parameters())
    return ref


def run_ours(model: TinyGPT, prompt: list[int], new: int) -> tuple[float, list[int]]:
    gen = Generator(model, prompt, new, temperature=0.0)
    tokens = list(gen)
    return gen.stats.decode_tokens_per_s, tokens


def run_mlx_lm(ref, prompt: list[int], new: int) -> tuple[float, list[int]]:
    from mlx_lm.generate import generate_step

    tokens, start = [], None
    for token, _ in generate_step(mx.array(prompt), ref, max_tokens=new, sampler=lambda x: mx.argmax(x, axis=-1)):
        tokens.append(int(token))
        if start is None:
            start = time.perf_counter()  # the first token comes from the prefill
    return (len(tokens) - 1) / (time.perf_counter() - start), tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", dest="d_model", type=int, default=256)
    p.add_argument("--n-layers", dest="n_layers", type=int, default=4)
    p.add_argument("--n-heads", dest="n_heads", type=int, default=4)
    p.add_argument("--max-seq-len", dest="max_seq_len", type=int, default=256)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--new", type=int, default=128, help="new tokens per run")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.prompt + args.new > args.max_seq_len:
        p.error("prompt + new must fit in max_seq_len (the bench measures cache decoding, not the sliding window)")

    mx.random.seed(0)
    cfg = ModelConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, max_seq_len=args.max_seq_len)
    model = TinyGPT(cfg, args.vocab)
    model.eval()
    mx.eval(model.parameters())
    ref = mlx_lm_model(model)
    prompt = mx.random.randint(0, args.vocab, (args.prompt,), key=mx.random.key(1)).tolist()

    sides = {"tinygpt": lambda: run_ours(model, prompt, args.new), "mlx_lm": lambda: run_mlx_lm(ref, prompt, args.new)}
    streams = {name: fn()[1] for name, fn in sides.items()}  # warm-up, and the greedy streams to compare
    rates = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            rates[name].append(fn()[0])
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {"shape": vars(args), "decode_tokens_per_s": med, "all": rates,
              "ratio_tinygpt_over_mlx_lm": med["tinygpt"] / med["mlx_lm"],
              "same_greedy_tokens": streams["tinygpt"] == streams["mlx_lm"]}
    print(f"d{args.d_model}/L{args.n_layers}/H{args.n_heads} vocab {args.vocab}, prompt {args.prompt}, "
          f"{args.new} new tokens, greedy; median of {args.rounds} alternating rounds")
    for name in sides:
        print(f"  {name:8s} decode {med[name]:8.0f} tokens/s  ({1e3 / med[name]:.2f} ms/token)")
    print(f"  ratio tinygpt/mlx_lm: {result['ratio_tinygpt_over_mlx_lm']:.2f}; "
          f"same greedy tokens: {result['same_greedy_tokens']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
