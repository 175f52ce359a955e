"""Token counts of the shared TinyStories excerpt per tokenizer (the table in DATA.md).

Usage: python scripts/token_counts.py [--data-dir ../shared/data/tinystories] [--gpt2-dir ../shared/data/gpt2-bpe]
Runs the real `prepare_data` for char, bpe (4096) and gpt2 into a temporary cache and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tinygpt_mlx.config import Config, DataConfig
from tinygpt_mlx.data.prepare import prepare_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    """Prepare the excerpt with each tokenizer and print token counts and timings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(SHARED / "tinystories"))
    ap.add_argument("--gpt2-dir", default=str(SHARED / "gpt2-bpe"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for kind in ("char", "bpe", "gpt2"):
            data = DataConfig(data_dir=args.data_dir, tokenizer=kind, bpe_vocab_size=4096,
                              tokenizer_dir=args.gpt2_dir, cache_dir=cache)
            t0 = time.perf_counter()
            meta = prepare_data(Config(data=data)).meta
            seconds = time.perf_counter() - t0
            tr, va = meta["splits"]["train"], meta["splits"]["val"]
            name = "bpe 4096" if kind == "bpe" else kind
            rows.append(f"| {name} | {meta['tokenizer']['vocab_size']:,} | {meta['dtype']} | {tr['tokens']:,} | "
                        f"{va['tokens']:,} | {tr['bytes'] / tr['tokens']:.2f} | {va['bytes'] / va['tokens']:.2f} | "
                        f"{seconds:.1f} |")
    print("| tokenizer | vocab | dtype | train tokens | val tokens | train bytes/token | val bytes/token "
          "| prepare s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\ntrain: {tr['stories']:,} stories, {tr['bytes']:,} UTF-8 bytes; "
          f"val: {va['stories']:,} stories, {va['bytes']:,} UTF-8 bytes (counts include one EOS per story)")


if __name__ == "__main__":
    main()
