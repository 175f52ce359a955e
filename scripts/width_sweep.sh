#!/usr/bin/env bash
# The README's scaling result end to end: train the width sweep (configs/scaling_width.yaml: 6 widths,
# 2 layers, 1.2M char tokens each), then fit L(N) and L(C) with bootstrap intervals and plot them.
# Resumable: run it again after a crash or Ctrl-C and finished runs are skipped.
#   scripts/width_sweep.sh                 # -> results/width_sweep/{sweep_summary.csv,runs/,fits/}
#   PYTHON=.venv/bin/python OUT=/tmp/ws scripts/width_sweep.sh --jobs 1
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-results/width_sweep}"
# Local TinyStories files (the shared excerpt beside the repository) unless the caller chose others.
export TINYGPT_DATA_DIR="${TINYGPT_DATA_DIR:-$(cd .. && pwd)/shared/data/tinystories}"

"$PYTHON" -m tinygpt_mlx sweep --config configs/scaling_width.yaml --output_dir "$OUT" "$@"
"$PYTHON" -m tinygpt_mlx scaling fit --results "$OUT" --output_dir "$OUT/fits" --law all --bootstrap 200 --seed 0
echo "results in $OUT: sweep_summary.csv, fits/fits.json, fits/fits.yaml, fits/fit_N.png, fits/fit_C.png"
