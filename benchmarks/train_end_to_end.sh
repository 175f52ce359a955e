#!/usr/bin/env bash
# End-to-end `tinygpt train` throughput at the reference shape (configs/base_config.yaml: d_model 256 /
# 4 layers / 4 heads / seq 256 / batch 16 / char / fp32 / AdamW): median tokens_per_sec of metrics.jsonl
# after the first 10 steps (compilation), evals and samples off. Usage: benchmarks/train_end_to_end.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-60}
BIN=${BIN:-$(dirname "$(command -v tinygpt || echo .venv/bin/tinygpt)")}
export TINYGPT_DATA_DIR="${TINYGPT_DATA_DIR:-$(cd .. && pwd)/shared/data/tinystories}"
RUN=$(mktemp -d)/run
"$BIN/tinygpt" train --config configs/base_config.yaml --save_dir "$RUN" --max-steps "$STEPS" \
    -o schedule.warmup_steps=10 -o eval.eval_every=100000 -o eval.sample_n=0 -o runtime.log_interval=1 \
    -o checkpoint.save_every=100000 > /dev/null
"$BIN/python" - "$RUN/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
steady = [r for r in rows if r["step"] > 10]
tps = statistics.median(r["tokens_per_sec"] for r in steady)
print(f"tinygpt train, reference shape: median {tps:,.0f} tokens/s over steps 11-{rows[-1]['step']}, "
      f"peak MLX memory {rows[-1]['peak_memory_bytes'] / 2**20:,.0f} MiB")
PY
