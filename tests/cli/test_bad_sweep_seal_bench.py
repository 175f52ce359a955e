"""Bad sweeps, scaling fits, SEAL settings and bench arguments: clean refusals that write nothing."""

from __future__ import annotations

import json

import pytest

SWEEPS = {  # sweep file body (after base_config), what the message says
    "grid: {}": "grid is empty: name at least one config key with a list of values",
    "": "grid is empty",
    "grid: {model.d_modl: [16, 32]}": "unknown key 'model.d_modl' (did you mean 'd_model'?)",
    "grid: {model.d_model: []}": "grid.model.d_model must be a non-empty list of values",
    "grid: {model.d_model: 16}": "grid.model.d_model must be a non-empty list of values",
    "grid: [1, 2]": "grid must map config keys (section.key) to lists of values",
    "grid: {d_model: [16]}": "grid key 'd_model' must look like section.key",
    "grid: {model.d_model: [16]}\nfoo: 1": "unknown sweep key 'foo'",
    "grid: {model.d_model: [16]}\nmode: diagonal": "mode = 'diagonal' is not one of cross, zip",
    "grid: {model.d_model: [16, 32], model.n_layers: [1]}\nmode: zip": "mode zip needs lists of equal length",
    "grid: {model.d_model: [16]}\ntoken_budget: .nan": "token_budget must be a positive number of tokens, got nan",
    "grid: {model.d_model: [16]}\ntoken_budget: -5": "token_budget must be a positive number of tokens, got -5",
    "grid: {model.d_model: [16]}\noverrides: [1]": "overrides must be a mapping of config keys to values",
    "grid: {model.d_model: [16, 16]}": "the grid gives several runs the same name (d_model-16)",
    "grid: {model.d_model: [16, 33]}": "run d_model-33: model.d_model (33) must be divisible by model.n_heads (2)",
}


@pytest.mark.parametrize("body", SWEEPS)
def test_bad_sweep_files(body: str, trained, write, refused, tmp_path) -> None:
    sweep = write("sweep.yaml", f"base_config: {trained.config}\n{body}\n")
    for extra in (["--dry-run"], []):
        refused(["sweep", "-c", sweep, "--output_dir", tmp_path / "out", *extra], SWEEPS[body])


def test_bad_sweep_files_and_options(trained, write, refused, tmp_path) -> None:
    out = ["--output_dir", tmp_path / "out"]
    refused(["sweep", "-c", write("list.yaml", "- 1\n"), *out], "must hold a mapping")
    refused(["sweep", "-c", write("nobase.yaml", "grid: {model.d_model: [16]}\n"), *out],
            "a sweep file needs base_config")
    refused(["sweep", "-c", write("gone.yaml", "base_config: missing.yaml\ngrid: {model.d_model: [16]}\n"), *out],
            "config file not found")
    write("scalar.yaml", "just a string\n")
    refused(["sweep", "-c", write("bad_base.yaml", "base_config: scalar.yaml\ngrid: {model.d_model: [16]}\n"), *out],
            "scalar.yaml must hold a mapping (key: value lines), not a str")
    good = write("good.yaml", f"base_config: {trained.config}\ngrid: {{model.d_model: [16]}}\n")
    refused(["sweep", "-c", good, *out, "--in-process", "--jobs", "2"], "--in-process trains one run at a time")
    refused(["sweep", "-c", good, *out, "-o", "optim.lr=nan"], "optim.lr must be a finite number")


@pytest.mark.parametrize("option", ["--jobs", "--token-budget"])
def test_sweep_counts_below_one_are_usage_errors(option: str, trained, write, cli, tmp_path) -> None:
    good = write("good.yaml", f"base_config: {trained.config}\ngrid: {{model.d_model: [16]}}\n")
    result = cli("sweep", "-c", good, "--output_dir", tmp_path / "out", option, "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    words = " ".join(result.stderr.replace("│", " ").split())  # typer draws usage errors in a box
    assert "Input should be greater than or equal to 1" in words and not (tmp_path / "out").exists()


SUMMARIES = {  # sweep_summary.csv content, what the message says
    b"\x00\xff garbage,,\n1,2,3\n": "is not a sweep summary CSV ('utf-8' codec can't decode",
    b"name,status,final_val_loss\nx,done,1.0,extra\n": "sweep_summary.csv:2 has more cells than the header",
    b"name,status,final_val_loss\nx\n": "sweep_summary.csv:2 has fewer cells than the header",
    b"a,b\n1,2\n": "its header lacks the name and status columns",
    b"name,status,final_val_loss,tokens_seen,non_embedding_params\nx,done,abc,1,1\n":
        "no finished runs to fit (1 found, none with status done and a final_val_loss)",
    b"": "no finished runs to fit (0 found",
}


@pytest.mark.parametrize("content", SUMMARIES, ids=range(len(SUMMARIES)))
def test_garbage_sweep_summaries(content: bytes, write, refused, tmp_path) -> None:
    write("sweep/sweep_summary.csv", content)
    refused(["scaling", "fit", "--results", tmp_path / "sweep", "--output_dir", tmp_path / "fits"],
            SUMMARIES[content])


def test_a_garbled_metrics_log_leaves_its_run_out_of_the_fit(trained, run_copy, refused, cli, tmp_path) -> None:
    run = run_copy("run")
    (run / "metrics.jsonl").write_bytes(b'\xff\xfe garbage\n[1]\n{"type": "eval", "step": 2, "val_loss": "abc"}\n')
    refused(["scaling", "fit", "--results", run, "--output_dir", tmp_path / "fits"],
            "no finished runs to fit (1 found, none with status done and a final_val_loss)")
    # Resuming keeps only the records it can read up to the checkpoint's step, and trains on.
    done = cli("train", "-c", trained.config, "--save_dir", run, "--resume", "auto", "--max-steps", "3")
    assert done.exit_code == 0, done.output
    assert "(2 metric lines past it dropped)" in done.stdout


def test_fits_on_too_few_runs_or_bad_options(trained, refused, tmp_path) -> None:
    base = ["scaling", "fit", "--results", trained.run, "--output_dir", tmp_path / "fits"]
    refused(base, "no law can be fit to 1 finished run(s) (skipped N, D, C, ND)", "it needs at least 3 runs")
    refused([*base, "--law", "ND"], "it needs at least")
    refused([*base, "--law", "Q"], "--law 'Q' is not one of N, D, C, ND, all")
    refused([*base, "--x", "foo"], "--x 'foo' is not one of non_embedding_params, params")
    refused([*base, "--loss", "foo"], "--loss 'foo' is not one of")
    refused([*base, "--seed", "-1"], "--seed must be between 0 and 4294967295")
    refused(["scaling", "fit", "--results", tmp_path / "nope", "--output_dir", tmp_path / "fits"],
            "results not found")


@pytest.mark.parametrize("override, message", [
    ("seal.k_edits=0", "seal.k_edits must be positive, got 0"),
    ("seal.rounds=-1", "seal.rounds must be positive, got -1"),
    ("seal.inner_lr=nan", "seal.inner_lr must be a finite number"),
    ("seal.edit_temperature=-1", "seal.edit_temperature must be >= 0, got -1.0"),
    ("seal.edit_top_p=1.5", "seal.edit_top_p must be in (0, 1], got 1.5"),
    ("seal.seed=-1", "seal.seed must be between 0 and 4294967295"),
    ("seal.lora_dropout=1.5", "seal.lora_dropout must be in [0, 1), got 1.5"),
    ("seal.ranks=[]", "seal.ranks must be a non-empty list of positive integers"),
    ("seal.inner_steps=[0]", "seal.inner_steps must be a non-empty list of positive integers"),
    ("seal.lora_modules=[c_atn]", "unknown LoRA module(s) 'c_atn'"),
    ("seal.enabled=false", "set `seal.enabled: true`"),
])
def test_seal_settings_out_of_range(override: str, message: str, trained, refused, tmp_path) -> None:
    refused(["seal", "adapt", "-c", trained.config, "-o", "seal.enabled=true", "-o", override, "--init-from",
             trained.run, "--run_dir", tmp_path / "seal"], message)


def test_seal_without_a_model_or_with_the_wrong_one(trained, refused, tmp_path) -> None:
    base = ["seal", "adapt", "-c", trained.config, "-o", "seal.enabled=true", "--run_dir", tmp_path / "seal"]
    refused(base, "seal adapt needs a model: pass --init-from CKPT")
    refused([*base, "--init-from", tmp_path / "nope"], "checkpoint not found")
    refused([*base, "--init-from", trained.config], "is a file, not a checkpoint")


RECORDS = {  # adapt.jsonl content, what the message says
    b"": "has no finished round yet",
    b"garbage\n{\"type\": \"round\", \"round\": 0}\n": "adapt.jsonl:1 is not JSON",
    b"[1, 2]\n": "adapt.jsonl:1 is not a `seal adapt` record (type edit or round)",
    b"\xff\xfe\n": "is not UTF-8 text, so not a `seal adapt` record file",
    b'{"type": "edit", "round": 0}\n{"type": "round", "round": 0}\n': "record 1 lacks split, method, context_id",
    json.dumps({"type": "edit", "round": 0, "split": "heldout", "method": "none", "context_id": 1,
                "delta_loss": "big", "target_loss": 1, "forgetting": 0, "reward": 0}).encode()
    + b'\n{"type": "round", "round": 0}\n': "record 1 has a non-number in delta_loss",
}


@pytest.mark.parametrize("content", RECORDS, ids=range(len(RECORDS)))
def test_seal_analyze_on_garbage(content: bytes, write, refused, tmp_path) -> None:
    write("seal/adapt.jsonl", content)
    refused(["seal", "analyze", "--run_dir", tmp_path / "seal"], RECORDS[content])


@pytest.mark.parametrize("args, message", [
    (["--sizes", "huge"], "unknown size 'huge' (choose from tiny, small, base, medium, large)"),
    (["--sizes", ""], "sizes, sequence lengths and phases must each name at least one value"),
    (["--seq-len", "0"], "sequence length must be at least 2, got 0"),
    (["--seq-len", "abc"], "could not read the list 'abc'"),
    (["--seq-len", "10000000"], "bench size base at sequence length 10000000 does not fit in memory"),
    (["--batch", "0"], "batch and steps must be >= 1"),
    (["--steps", "0"], "batch and steps must be >= 1"),
    (["--vocab", "0"], "vocab, decode tokens and gemm n must be >= 1"),
    (["--decode-tokens", "0"], "vocab, decode tokens and gemm n must be >= 1"),
    (["--gemm-n", "0"], "vocab, decode tokens and gemm n must be >= 1"),
    (["--dtype", "int8"], "dtype must be one of float32, bfloat16, got 'int8'"),
    (["--phases", "foo"], "unknown phase 'foo' (train, prefill, decode)"),
    (["--arch", "gpt3"], "arch = 'gpt3' is not one of gpt2, llama"),
])
def test_bench_arguments(args: list[str], message: str, refused) -> None:
    refused(["bench", *args], message)
