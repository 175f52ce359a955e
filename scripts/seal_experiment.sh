#!/usr/bin/env bash
# The SEAL experiment of README from one command: train the base model, run SEAL, write the table.
#   bash scripts/seal_experiment.sh
# Every step resumes where it stopped: after an interruption (Ctrl-C, a kill, a crash) run it again.
#
# Budget on the 2-core CPU (<= 2 hours; measured, with a scaling grid sharing the cores: docs/seal.md#budget):
#   data prepare: byte-level BPE of 2,048 tokens on the 15 MB excerpt      under a minute (cached after)
#   base model: STEPS=2572 updates of 8 x 256 tokens (5.3M tokens)         22 minutes (about 14 alone)
#   seal adapt: configs/ablation_seal.yaml (2,700 inner-loop runs)          73 minutes with one BLAS thread
#   seal analyze: table, paired bootstrap, plots                            under a minute
# Outputs: $BASE (the base model's run folder), $SEAL_RUN (adapt.jsonl, policies, plots; not committed)
# and $OUT (seal_contexts.csv, seal_rounds.csv, seal_table.md/.csv, plots: small, committed), from which
# `tinygpt seal analyze --run_dir $OUT` rebuilds the table.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tinygpt on PATH, else the Makefile's .venv; BIN=/path/to/venv/bin overrides both.
BIN=${BIN:-$(dirname "$(command -v tinygpt || echo .venv/bin/tinygpt)")}
DATA=${DATA:-../shared/data/tinystories-15mb}
# The base model: configs/base_config.yaml, the quality recipe's 15-minute run (BPE 2048, GPT-2 blocks d256 /
# 4 layers; 0.994 bits/byte, docs/recipe.md), with 256 positions so a prompt (context + template) and a 64-token
# self-edit fit; 8 x 256 keeps its 2,048 tokens per step. Point BASE_CONFIG / BASE_OVERRIDES at another recipe to
# change it (overrides are split on spaces: write lists without them, e.g. -o seal.ranks=[4,8]).
BASE_CONFIG=${BASE_CONFIG:-configs/base_config.yaml}
BASE_OVERRIDES=${BASE_OVERRIDES:-"-o model.max_seq_len=256 -o data.block_size=256 -o data.batch_size=8"}
STEPS=${STEPS:-2572}
BASE=${BASE:-checkpoints/seal_base}
SEAL_CONFIG=${SEAL_CONFIG:-configs/ablation_seal.yaml}
SEAL_OVERRIDES=${SEAL_OVERRIDES:-}
SEAL_RUN=${SEAL_RUN:-results/seal_tinystories}
OUT=${OUT:-docs/seal_results}

read -r -a base_args <<< "$BASE_OVERRIDES"
read -r -a seal_args <<< "$SEAL_OVERRIDES"

# 1. The base model (resumes from its newest checkpoint).
"$BIN/tinygpt" data prepare --config "$BASE_CONFIG" --data_dir "$DATA" "${base_args[@]}"
"$BIN/tinygpt" train --config "$BASE_CONFIG" --save_dir "$BASE" --data_dir "$DATA" --max_steps "$STEPS" \
    "${base_args[@]}" --resume auto

# 2. SEAL: round 0 (baselines, base self-edits, control, in-context bound), then the ReST^EM rounds, on
#    the base model's validation stories. Replays what adapt.jsonl already holds and computes the rest.
"$BIN/tinygpt" seal adapt --config "$SEAL_CONFIG" --init-from "$BASE/best" --run_dir "$SEAL_RUN" "${seal_args[@]}"

# 3. The table with paired 95% intervals, the per-context and per-round summaries, the plots.
"$BIN/tinygpt" seal analyze --run_dir "$SEAL_RUN" --out "$OUT"
