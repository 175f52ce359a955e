"""Damaged, foreign or mismatched checkpoints, and --resume / --init-from pointing at the wrong thing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STEP = "step-0000002"


def rehash(folder: Path, name: str) -> None:
    """Make manifest.json agree with an edited file again, as a user hand-editing a checkpoint would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def flip_a_bit(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))


def drop_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()


def garble_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text('{"files": {"model.safetensors": 3}}')


def manifest_not_json(folder: Path) -> None:
    (folder / "manifest.json").write_bytes(b"\xff\x00 not json")


def config_no_longer_matches(folder: Path) -> None:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["model"]["d_model"] = 64
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    rehash(folder, "config.yaml")


def state_not_a_mapping(folder: Path) -> None:
    (folder / "state.json").write_text("[1]")
    rehash(folder, "state.json")


def config_invalid(folder: Path) -> None:
    (folder / "config.yaml").write_text("model:\n  n_heads: 3\n")
    rehash(folder, "config.yaml")


DAMAGE = {
    "truncated": (truncate, "model.safetensors is corrupt: 100 bytes, manifest says"),
    "bit-flipped": (flip_a_bit, "model.safetensors is corrupt: sha256 does not match the manifest"),
    "no-manifest": (drop_manifest, "is incomplete: manifest.json is missing"),
    "garbled-manifest": (garble_manifest, "has an unreadable manifest.json"),
    "binary-manifest": (manifest_not_json, "has an unreadable manifest.json"),
    "config-mismatch": (config_no_longer_matches, "its model.safetensors does not hold the model its config.yaml "
                        "describes (wte.weight is [51, 32], the config makes [51, 64]"),
    "config-invalid": (config_invalid, "has an invalid config.yaml: model.d_model (256) must be divisible"),
    "state-garbled": (state_not_a_mapping, "has an unreadable state.json or config.yaml"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_refused_by_every_reader(damage: str, run_copy, refused, trained, tmp_path):
    run = run_copy("damaged")
    spoil, message = DAMAGE[damage]
    spoil(run / STEP)
    step = run / STEP
    refused(["sample", "--checkpoint", step, "--max-new-tokens", "2"], message)
    refused(["eval", "--checkpoint", step], message)
    refused(["export", "--checkpoint", step, "--format", "hf", "-o", tmp_path / "hf"], message)
    refused(["train", "-c", trained.config, "--save_dir", tmp_path / "new", "--init-from", step], message)
    refused(["train", "-c", trained.config, "--save_dir", tmp_path / "resumed", "--resume", step], message)
    refused(["seal", "adapt", "-c", trained.config, "-o", "seal.enabled=true", "--init-from", step,
             "--run_dir", tmp_path / "seal"], message)


@pytest.mark.parametrize("name, content, message", [
    ("tokenizer.json", "{}", "tokenizer.json is not a readable tokenizer file (Model missing"),
    ("tinygpt_tokenizer.json", "[1]", "tinygpt_tokenizer.json is not a tokenizer description"),
])
def test_a_garbled_tokenizer(name: str, content: str, message: str, run_copy, refused, tmp_path) -> None:
    step = run_copy("damaged") / STEP
    (step / "tokenizer" / name).write_text(content)
    rehash(step, f"tokenizer/{name}")
    refused(["sample", "--checkpoint", step], message)
    refused(["eval", "--checkpoint", step], message)
    refused(["export", "--checkpoint", step, "--format", "mlx-lm", "-o", tmp_path / "out"], message)


def test_a_run_folder_whose_only_checkpoint_is_damaged(run_copy, refused) -> None:
    run = run_copy("damaged")
    truncate(run / STEP)
    (run / "last").unlink()
    refused(["sample", "--checkpoint", run], "no complete checkpoint in")
    refused(["eval", "--checkpoint_dir", run], "model.safetensors is corrupt")


@pytest.mark.parametrize("flag", ["--resume", "--init-from"])
def test_resume_and_init_from_pointing_at_the_wrong_thing(flag: str, trained, refused, write, tmp_path) -> None:
    base = ["train", "-c", trained.config, "--save_dir", tmp_path / "run", flag]
    refused([*base, tmp_path / "nope"], f"checkpoint not found: {tmp_path / 'nope'}")
    refused([*base, trained.config], f"{trained.config} is a file, not a checkpoint")
    (tmp_path / "empty").mkdir()
    refused([*base, tmp_path / "empty"], "no complete checkpoint in")
    write("hf/config.json", '{"model_type": "gpt2"}')
    refused([*base, tmp_path / "hf"], "no complete checkpoint in")
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / "last").symlink_to("step-0000009")
    refused([*base, tmp_path / "dangling" / "last"], "points at a missing folder")


@pytest.mark.parametrize("flag, what", [("--resume", "resume"), ("--init-from", "initialize")])
def test_another_tokenizer_or_architecture(flag: str, what: str, trained, refused, cli, tmp_path) -> None:
    save_dir = trained.run if flag == "--resume" else tmp_path / "run"
    base = ["train", "-c", trained.config, "--save_dir", save_dir, flag, trained.run]
    bpe = ["-o", "data.tokenizer=bpe", "-o", "data.bpe_vocab_size=300", "-o", f"data.cache_dir={tmp_path / 'c'}"]
    assert cli("data", "prepare", "-c", trained.config, *bpe).exit_code == 0  # the refusal comes after the data
    refused([*base, *bpe], f"cannot {what} from", "its tokenizer differs")
    refused([*base, "-o", "model.d_model=64"], f"cannot {what} from a checkpoint with a different architecture: "
            "model.d_model 32 -> 64")
    refused([*base, "-o", "model.arch=llama"], "model.arch gpt2 -> llama")


def test_resume_auto_on_a_run_that_is_further_along(trained, refused, cli) -> None:
    base = ["train", "-c", trained.config, "--save_dir", trained.run, "--resume", "auto"]
    refused([*base, "--max-steps", "1"], "is already past it; pass --max-steps 2 or more to train further")
    done = cli(*base, "--max-steps", "2")
    assert done.exit_code == 0, done.output
    assert "nothing to do:" in done.stdout and "is at step 2 of schedule.max_steps 2" in done.stdout


def test_a_fresh_start_into_a_run_folder_with_checkpoints(trained, refused) -> None:
    refused(["train", "-c", trained.config, "--save_dir", trained.run],
            "already holds checkpoints; pass --resume auto to continue it")


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--temperature", "nan"], "--temperature must be a finite number (0 = greedy), got nan"),
    (["--temperature", "inf"], "--temperature must be a finite number"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
    (["--top-k", "-1"], "--top-k must be at least 1, got -1"),
    (["--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be at least 1, got -3"),
    (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
    (["--num-samples", "-2"], "--num-samples must be at least 1, got -2"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["--seed", str(2**40)], "--seed must be between 0 and 4294967295"),
    (["--temperature", "-1", "--num-samples", "0"], "--temperature must be >= 0, got -1.0; --num-samples"),
])
def test_sampling_settings_out_of_range(args: list[str], message: str, trained, refused) -> None:
    refused(["sample", "--checkpoint", trained.run, *args], message)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(temperature=st.floats(), top_k=st.none() | st.integers(-3, 80), top_p=st.none() | st.floats(),
       max_new_tokens=st.integers(-3, 3), num_samples=st.integers(-1, 2), seed=st.none() | st.integers(-5, 2**33))
def test_any_sampling_settings_sample_or_are_refused(temperature, top_k, top_p, max_new_tokens, num_samples, seed,
                                                     trained, cli, user_error) -> None:
    args = ["sample", "--checkpoint", trained.run, "--temperature", temperature, "--max-new-tokens", max_new_tokens,
            "--num-samples", num_samples]
    for flag, value in (("--top-k", top_k), ("--top-p", top_p), ("--seed", seed)):
        if value is not None:
            args += [flag, value]
    result = cli(*args)
    if result.exit_code != 0:
        user_error(result)
    else:
        assert result.stdout.count("Once upon a time") == num_samples


def test_prompts_the_model_cannot_see_as_typed_get_a_notice(trained, cli) -> None:
    long = cli("sample", "--checkpoint", trained.run, "--prompt", "a" * 100, "--max-new-tokens", "2")
    assert long.exit_code == 0, long.output
    assert long.stderr == "note: the prompt is 100 tokens; the model sees only the last 32 (its model.max_seq_len)\n"
    unknown = cli("sample", "--checkpoint", trained.run, "--prompt", "Once €€ ☃", "--max-new-tokens", "2")
    assert unknown.exit_code == 0, unknown.output
    assert "note: the tokenizer does not know 2 character(s) of the prompt ('€', '☃'); the model sees <unk> in their place" in unknown.stderr
    plain = cli("sample", "--checkpoint", trained.run, "--prompt", "Once upon", "--max-new-tokens", "2")
    assert plain.exit_code == 0 and plain.stderr == ""


def test_ctrl_c_while_sampling_is_one_line(trained, cli, user_error, monkeypatch) -> None:
    import tinygpt_mlx.generate as generate

    def interrupted(tokenizer, tokens):
        yield "Once"
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "stream_text", interrupted)
    user_error(cli("sample", "--checkpoint", trained.run), code=130)


def test_export_and_import_refuse_what_they_cannot_use(trained, refused, write, tmp_path) -> None:
    refused(["export", "--checkpoint", trained.run, "--format", "onnx", "-o", tmp_path / "out"],
            "--format 'onnx' is not one of mlx-lm, hf")
    write("full/weights.bin", "x")
    refused(["export", "--checkpoint", trained.run, "--format", "hf", "-o", tmp_path / "full"],
            "already exists and is not an empty folder")
    refused(["import", "gpt2", "--hf-dir", trained.run, "-o", tmp_path / "imported"],
            "is not a Hugging Face model folder: config.json is missing")
    refused(["import", "gpt2", "--hf-dir", trained.config, "-o", tmp_path / "imported"], "is not a folder")
    for content, message in ((b"\xff\xfe", "is not valid JSON"), ("[1]", "must hold a JSON object"),
                             ('{"model_type": "llama"}', "has model_type 'llama'; only GPT-2"),
                             ('{"model_type": "gpt2"}', "lacks n_embd, n_layer, n_head, vocab_size"),
                             ('{"model_type": "gpt2", "n_embd": "wide", "n_layer": 2, "n_head": 2, '
                              '"n_positions": 8, "vocab_size": 10}', "n_embd must be a number, got 'wide'")):
        write("hf/config.json", content)
        refused(["import", "gpt2", "--hf-dir", tmp_path / "hf", "-o", tmp_path / "imported"], message)
