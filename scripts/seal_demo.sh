#!/usr/bin/env bash
# SEAL on TinyStories, end to end (issue 7's "real result"): train a small BPE TinyGPT, run 2 SEAL rounds
# with 20 training and 10 held-out contexts from the validation stories, then write the table and plots.
#
# Estimated on the 2-core x86 CPU (OpenBLAS): data prepare < 10 s; training 600 steps x 4,096 tokens
# ~10-15 min; seal adapt ~11 min (measured 3.6 s per inner-loop adaptation with the machine shared,
# 180 adaptations: 30 context baselines + 3 x 10 held-out + 2 x 60 training self-edits); analyze < 10 s.
# Training and adapt both resume: rerun the script after an interruption.
#   STEPS=600 SEAL_RUN=results/seal_tinystories BASE=checkpoints/seal_base bash scripts/seal_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The tinygpt on PATH, else the Makefile's .venv; BIN=/path/to/venv/bin overrides both.
BIN=${BIN:-$(dirname "$(command -v tinygpt || echo .venv/bin/tinygpt)")}
DATA=${DATA:-../shared/data/tinystories}
BASE=${BASE:-checkpoints/seal_base}
STEPS=${STEPS:-600}
SEAL_RUN=${SEAL_RUN:-results/seal_tinystories}

# 1. The base model: configs/demo.yaml's shape (d_model 192, 4 layers) with a 2048-token BPE vocabulary
#    and 256 positions, so a story's half fits in ~100 tokens (a char model would see a sentence or two).
TRAIN_ARGS=(--config configs/demo.yaml --save_dir "$BASE" --data_dir "$DATA" --max_steps "$STEPS" -o model.n_layers=4
            -o data.tokenizer=bpe -o data.bpe_vocab_size=2048 -o model.max_seq_len=256
            -o data.block_size=256 -o data.batch_size=16 -o schedule.warmup_steps=50)
"$BIN/tinygpt" data prepare --config configs/demo.yaml --data_dir "$DATA" \
    -o data.tokenizer=bpe -o data.bpe_vocab_size=2048 -o model.max_seq_len=256 -o data.block_size=256
"$BIN/tinygpt" train "${TRAIN_ARGS[@]}" --resume auto

# 2. SEAL: round 0 baselines (no adaptation, train on context, base-model self-edits), then 2 ReST^EM
#    rounds; contexts are the checkpoint's validation stories. Resumes at the last finished round.
"$BIN/tinygpt" seal adapt --config configs/ablation_seal.yaml --init-from "$BASE/best" --run_dir "$SEAL_RUN"

# 3. The table (seal_table.csv / .md) and plots (delta_vs_budget, pareto_forgetting; PNG + SVG).
"$BIN/tinygpt" seal analyze --run_dir "$SEAL_RUN"
