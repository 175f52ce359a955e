"""tinygpt bench: a tiny run takes seconds and its JSON has every field; FLOP counts match a hand count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinygpt_mlx.bench import SIZES, BenchSettings, model_config, run_bench
from tinygpt_mlx.config import ModelConfig
from tinygpt_mlx.cpu import lanes
from tinygpt_mlx.model import count_params_closed_form, flops_per_token

REPO = Path(__file__).resolve().parents[1]
TRAIN_KEYS = {"tokens_per_s", "step_ms", "step_ms_all", "flops_per_token", "achieved_gflops", "mfu", "peak_memory_mb",
              "cpu_threads"}
PREFILL_KEYS = {"tokens_per_s", "ms", "prompt_tokens", "flops_per_token", "achieved_gflops", "mfu", "peak_memory_mb"}
DECODE_KEYS = {"tokens_per_s", "ms_per_token", "prompt_tokens", "new_tokens", "peak_memory_mb"}
CASE_KEYS = {"size", "arch", "d_model", "n_layers", "n_heads", "params", "non_embedding_params", "seq_len", "batch",
             "dtype", "train", "prefill", "decode"}


def tiny_settings(**kw) -> BenchSettings:
    base = dict(sizes=["tiny"], seq_lens=[16], batch=2, steps=2, warmup=1, decode_tokens=4, gemm_n=64)
    base.update(kw)
    return BenchSettings(**base)


@pytest.fixture(scope="module")
def record() -> dict:
    return run_bench(tiny_settings())


def test_record_has_every_field(record):
    assert record["schema"] == "tinygpt-bench/1"
    assert set(record) == {"schema", "environment", "gemm_fp32_gflops", "gemm_n", "settings", "results"}
    assert {"device", "backend", "blas", "mlx", "platform", "cpu"} <= set(record["environment"])
    assert record["gemm_fp32_gflops"] > 0 and record["gemm_n"] == 64
    assert record["settings"]["sizes"] == ["tiny"] and record["settings"]["batch"] == 2
    (case,) = record["results"]
    assert set(case) == CASE_KEYS
    assert set(case["train"]) == TRAIN_KEYS
    assert set(case["prefill"]) == PREFILL_KEYS
    assert set(case["decode"]) == DECODE_KEYS
    json.dumps(record)  # JSON-able as it stands


def test_record_values_are_consistent(record):
    (case,) = record["results"]
    cfg = model_config("tiny", 16)
    assert (case["d_model"], case["n_layers"], case["n_heads"]) == SIZES["tiny"]
    assert case["params"] == count_params_closed_form(cfg, 65)
    train, gemm = case["train"], record["gemm_fp32_gflops"]
    assert len(train["step_ms_all"]) == 2
    assert train["tokens_per_s"] == pytest.approx(2 * 16 / (train["step_ms"] / 1e3))
    assert train["flops_per_token"] == flops_per_token(cfg, 65, 16, include_head=True)
    assert train["achieved_gflops"] == pytest.approx(train["flops_per_token"] * train["tokens_per_s"] / 1e9)
    assert train["mfu"] == pytest.approx(train["achieved_gflops"] / gemm)
    assert train["cpu_threads"] == lanes.choose_lanes(0, 2, distributed=False)  # what `tinygpt train` would use
    prefill = case["prefill"]
    assert prefill["prompt_tokens"] == 16
    assert prefill["flops_per_token"] == pytest.approx(train["flops_per_token"] / 3)
    decode = case["decode"]
    assert (decode["prompt_tokens"], decode["new_tokens"]) == (8, 4)
    assert decode["ms_per_token"] == pytest.approx(1e3 / decode["tokens_per_s"])
    for phase in ("train", "prefill", "decode"):
        assert case[phase]["tokens_per_s"] > 0 and case[phase]["peak_memory_mb"] > 0


def test_flops_per_token_matches_hand_count():
    # d=32, 2 layers, ffn 128, bias, vocab 50, seq 16. Per layer: 2 LayerNorms 2*64, c_attn 32*96+96,
    # attn c_proj 32*32+32, c_fc 32*128+128, mlp c_proj 128*32+32 = 12704; two layers + ln_f 64 = 25472.
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
    n = 2 * (128 + 3168 + 1056 + 4224 + 4128) + 64
    assert count_params_closed_form(cfg, 50, non_embedding=True) == n == 25472
    attention = 6 * 2 * 16 * 32  # 6 n_layers seq d_model
    head = 6 * 32 * 50  # tied output projection, forward + backward
    assert flops_per_token(cfg, 50, 16) == 6 * n + attention == 158_976
    assert flops_per_token(cfg, 50, 16, include_head=True) == 6 * n + attention + head == 168_576


def test_sizes_cover_the_cost_growth_grid():
    params = [count_params_closed_form(model_config(size, 1024), 65) for size in SIZES]
    assert params == sorted(params) and len(params) >= 4
    assert 20e6 < params[-1] < 35e6  # the largest is ~30M parameters


def test_bad_settings_are_reported_together():
    problems = tiny_settings(sizes=["huge"], seq_lens=[1], dtype="int8", arch="lama").validate()
    assert len(problems) == 4


def test_llama_sizes_bench_the_llama_arch():
    (case,) = run_bench(tiny_settings(arch="llama", phases=["prefill"]))["results"]
    cfg = model_config("tiny", 16, "llama")
    assert case["arch"] == cfg.arch == "llama" and case["params"] == count_params_closed_form(cfg, 65)
    assert case["params"] != count_params_closed_form(model_config("tiny", 16), 65)
    assert case["prefill"]["flops_per_token"] == pytest.approx(flops_per_token(cfg, 65, 16, include_head=True) / 3)


def test_cli_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = subprocess.run([sys.executable, "-m", "tinygpt_mlx", "bench", "--sizes", "tiny", "--seq-len", "16,32",
                           "--tokens", "64", "--steps", "1", "--warmup", "1", "--decode-tokens", "4", "--gemm-n", "64",
                           "--json", str(out), "--plot", str(png)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert [c["seq_len"] for c in record["results"]] == [16, 32]
    assert [c["batch"] for c in record["results"]] == [4, 2]  # --tokens 64: the batch shrinks as seq grows
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tokens_per_step_sets_the_batch():
    s = tiny_settings(tokens=4096)
    assert [s.batch_for(t) for t in (64, 256, 1024, 8192)] == [64, 16, 4, 1]
    assert tiny_settings().batch_for(1024) == 2  # no tokens: the fixed batch
    assert tiny_settings(tokens=-1).validate()


def test_cli_user_error_exits_2():
    proc = subprocess.run([sys.executable, "-m", "tinygpt_mlx", "bench", "--sizes", "huge"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown size 'huge'" in proc.stderr and "Traceback" not in proc.stderr
