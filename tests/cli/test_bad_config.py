"""Bad configs and overrides: every one is a clean refusal (exit 2, one line or the list) that writes nothing."""

from __future__ import annotations

import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygpt_mlx.config import SEED_RANGE, Config
from tinygpt_mlx.config_file import MAX_BYTES, MAX_NODES


def alias_bomb(levels: int = 9) -> str:
    """The 'billion laughs' YAML: each level is nine aliases of the one before (9**levels strings)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


FILES = {  # name: (content, what the message says)
    "binary.yaml": (b"\xff\xfe\x00\x01\x89PNG garbage", "is not UTF-8 text (byte 0xff at offset 0)"),
    "latin1.yaml": ("model:\n  name: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    "list.yaml": ("- 1\n- 2\n", "must hold a mapping (key: value lines), not a list"),
    "scalar.yaml": ("hello\n", "must hold a mapping (key: value lines), not a str"),
    "list.json": ("[1, 2]", "must hold a mapping (key: value lines), not a list"),
    "broken.json": ("{bad json", "cannot parse"),
    "broken.yaml": ("model: [1, 2\n", "cannot parse"),
    "section.yaml": ("model: 3\n", "section 'model' must be a mapping, got 3"),
    "duplicate.yaml": ("model:\n  d_model: 32\n  d_model: 64\n", "duplicate key 'd_model' (each key may appear once) (line 3)"),
    "duplicate.json": ('{"model": {"d_model": 32, "d_model": 64}}', "duplicate key 'd_model'"),
    "bomb.yaml": (alias_bomb(), f"expands to more than {MAX_NODES:,} values through YAML aliases"),
    "huge.yaml": ("# padding\n" * (MAX_BYTES // 10 + 1), f"a config file is at most {MAX_BYTES:,}"),
    "unknown.yaml": ("modle:\n  d_model: 32\n", "unknown section 'modle' (did you mean 'model'?)"),
    "types.yaml": ("model:\n  d_model: abc\n  tie_embeddings: maybe\n", "model.d_model must be an integer, got 'abc'"),
    "nan.yaml": ("optim:\n  lr: .nan\n", "optim.lr must be a finite number, got nan"),
    "inf.yaml": ("optim:\n  weight_decay: .inf\n", "optim.weight_decay must be a finite number, got inf"),
}


@pytest.mark.parametrize("name", FILES)
def test_bad_config_files_are_refused_by_every_reader(name: str, write, refused, tmp_path) -> None:
    content, message = FILES[name]
    path = write(name, content)
    err = refused(["config", "show", path], message)
    assert len(err) < 600  # the alias bomb printed 709 MB of error text before
    refused(["train", "-c", path, "--save_dir", tmp_path / "run"], message)


def test_several_config_problems_come_as_one_list(write, refused) -> None:
    path = write("many.yaml", "model:\n  d_model: -4\n  n_heads: 3\noptim:\n  lrr: 1\n")
    err = refused(["config", "show", path], "3 config errors:", "model.d_model must be positive, got -4",
                  "unknown key 'optim.lrr' (did you mean 'lr'?)")
    assert err.count("\n  - ") == 3


@pytest.mark.parametrize("override, message", [
    ("garbage", "override 'garbage' must look like section.key=value"),
    ("a.b.c=1", "override key 'a.b.c' must be section.key"),
    ("=1", "override key '' must be section.key"),
    ("model={}", "override key 'model' must be section.key"),
    ("model.d_model=[1,2", "model.d_model must be an integer, got '[1,2'"),
    ("optim.lr=nan", "optim.lr must be a finite number, got 'nan'"),
    ("optim.weight_decay=-inf", "optim.weight_decay must be a finite number"),
    ("optim.betas=[nan,0.9]", "optim.betas[0] must be a finite number"),
    ("schedule.epochs=inf", "schedule.epochs must be a finite number"),
    ("runtime.seed=-1", "runtime.seed must be between 0 and 4294967295"),
    ("data.split_seed=4294967296", "data.split_seed must be between 0 and 4294967295"),
    ("model.d_model=0", "model.d_model must be positive, got 0"),
    ("data.batch_size=-8", "data.batch_size must be positive, got -8"),
    ("eval.sample_top_p=2", "eval.sample_top_p must be in (0, 1]"),
    ("eval.sample_top_k=-1", "eval.sample_top_k must be at least 1"),
    ("eval.sample_max_new_tokens=-5", "eval.sample_max_new_tokens must be >= 0, got -5"),
    ("checkpoint.save_dir=", "checkpoint.save_dir must name a folder, got an empty string"),
    ("data.cache_dir= ", "data.cache_dir must name a folder"),
    ('checkpoint.save_dir="run\\0x"', "checkpoint.save_dir must not hold a NUL character"),
])
def test_malformed_or_out_of_range_overrides(override: str, message: str, refused) -> None:
    refused(["config", "show", "-o", override], message)


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "runtime.seed must be between 0 and 4294967295"),
    (["--seed", str(2**32)], "runtime.seed must be between 0 and 4294967295"),
    (["--max-steps", "0"], "schedule.max_steps must be positive, got 0"),
    (["-o", "optim.lr=nan"], "optim.lr must be a finite number"),
    (["-o", "schedule.warmup_steps=50", "-o", "optim.weight_decay=nan"], "optim.weight_decay must be a finite"),
    (["-o", "model.d_model=65536", "-o", "model.n_layers=1000"],
     "this config does not fit in memory: 51,540,461,813,760 parameters"),
    (["-o", "model.max_seq_len=10000000000"], "this config does not fit in memory"),
])
def test_train_refuses_before_writing(args: list[str], message: str, trained, refused, tmp_path) -> None:
    err = refused(["train", "-c", trained.config, "--save_dir", tmp_path / "run", *args], message)
    assert "note: schedule.warmup_steps" not in err  # no clamp note for a budget that is refused anyway


def test_an_absurd_model_names_what_it_would_need(trained, refused, tmp_path) -> None:
    err = refused(["train", "-c", trained.config, "--save_dir", tmp_path / "run", "-o", "model.d_model=16384",
                   "-o", "model.n_heads=16", "-o", "model.n_layers=48"], "d_model 16384, 48 layers")
    assert "need at least" in err and "GB to train at batch 4 x 32 tokens" in err and "this machine has" in err


def test_config_path_that_is_missing_or_a_folder(refused, tmp_path) -> None:
    refused(["config", "show", tmp_path / "nope.yaml"], "config file not found")
    refused(["config", "show", tmp_path], "is a folder; give a .yaml or .json file")


def test_an_empty_config_is_the_defaults_and_offline_it_says_where_data_must_come_from(
        write, refused, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TINYGPT_DATA_DIR", raising=False)
    empty = write("empty.yaml", "")
    refused(["train", "-c", empty, "--save_dir", tmp_path / "run", "-o", f"data.cache_dir={tmp_path / 'c'}"],
            "the Hugging Face hub is disabled")


def _field_names() -> list[str]:
    return [f"{section}.{key}" for section, values in Config().to_dict().items() for key in values]


CONFIG_TEXT = st.text(string.printable, max_size=200) | st.binary(max_size=200)
VALUES = st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.booleans(), st.none(),
                   st.lists(st.integers(), max_size=3))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONFIG_TEXT)
def test_any_file_content_is_read_or_refused_never_a_traceback(content, tmp_path, cli, user_error) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    result = cli("config", "show", path)
    if result.exit_code != 0:
        user_error(result)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(key=st.sampled_from(_field_names()), value=VALUES)
def test_any_value_for_any_key_is_taken_or_refused_never_a_traceback(key: str, value, cli, user_error) -> None:
    result = cli("config", "show", "-o", f"{key}={json.dumps(value)}")
    if result.exit_code != 0:
        user_error(result, key)
    else:
        section, name = key.split(".")
        shown = yaml.safe_load(result.stdout)[section][name]
        if isinstance(shown, float) and isinstance(value, float):
            assert shown == value
        if name.endswith("seed"):
            assert SEED_RANGE[0] <= shown <= SEED_RANGE[1]
