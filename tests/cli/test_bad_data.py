"""Bad corpora and data settings, and Ctrl-C during `data prepare`: refused in one line, the cache untouched."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygpt_mlx.data.sources import SEPARATOR

CORPORA = {  # file name: (content, what the message says)
    "empty.txt": ("", "the train split of local:"),
    "separators.txt": (f"{SEPARATOR}\n{SEPARATOR}\n", "has no stories"),
    "latin1.txt": ("Once upon a time, a caf\xe9.\n".encode("latin-1"),
                   "is not UTF-8 text: byte 0xe9 at offset 23 (line 1)"),
    "utf16.txt": ("Once upon a time".encode("utf-16"), "is not UTF-8 text: byte 0xff at offset 0"),
    "numbers.jsonl": ('{"text": 5}\n{"text": "a story"}\n', "numbers.jsonl:1: 'text' must be a string, got int"),
    "nested.jsonl": ('{"text": "ok"}\n{"text": ["a"]}\n', "nested.jsonl:2: 'text' must be a string, got list"),
    "arrays.jsonl": ("[1, 2]\n", "arrays.jsonl:1 is not a JSON object with a 'text' field"),
    "notext.jsonl": ('{"story": "x"}\n', "notext.jsonl:1 is not a JSON object with a 'text' field"),
    "torn.jsonl": ('{"text": "a story"\n', "torn.jsonl:1 is not a JSON object"),
    "binary.jsonl": (b'\xff\xfe{"text": "x"}\n', "binary.jsonl is not UTF-8 text"),
    "fake.parquet": ("this is not parquet", "fake.parquet is not a readable parquet file"),
    "empty.parquet": (b"", "empty.parquet is not a readable parquet file"),
    "story.txt.md": ("Once upon a time.", "unsupported data file"),
}


@pytest.mark.parametrize("name", CORPORA)
def test_bad_corpus_files(name: str, write, refused, trained, tmp_path) -> None:
    content, message = CORPORA[name]
    corpus = write(f"corpus/{name}", content)
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    refused(["data", "prepare", "-c", trained.config, "--data-dir", corpus, "-o", cache], message)
    refused(["train", "-c", trained.config, "--data-dir", corpus, "-o", cache, "--save_dir", tmp_path / "run"],
            message)


def test_parquet_with_the_wrong_text_column(refused, trained, tmp_path) -> None:
    (tmp_path / "corpus").mkdir()
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "corpus" / "ints.parquet")
    pq.write_table(pa.table({"story": ["a", "b"]}), tmp_path / "corpus" / "other.parquet")
    for name, message in (("ints.parquet", "column 'text' must hold strings, it holds int64"),
                          ("other.parquet", "has no 'text' column (columns: story)")):
        refused(["data", "prepare", "-c", trained.config, "--data-dir", tmp_path / "corpus" / name], message)


@pytest.mark.parametrize("layout, message", [
    ({}, "no .txt/.jsonl/.parquet files in"),
    ({"notes.md": "Once upon a time.", "story.csv": "text\nhello\n"}, "no .txt/.jsonl/.parquet files in"),
    ({"sub/train.txt": "Once upon a time."}, "no .txt/.jsonl/.parquet files in"),
])
def test_a_folder_with_nothing_readable(layout: dict[str, str], message: str, write, refused, trained, tmp_path):
    (tmp_path / "corpus").mkdir()
    for name, text in layout.items():
        write(f"corpus/{name}", text)
    refused(["data", "prepare", "-c", trained.config, "--data-dir", tmp_path / "corpus"], message)


def test_missing_or_wrong_data_paths(refused, trained, tmp_path) -> None:
    refused(["data", "prepare", "-c", trained.config, "--data-dir", tmp_path / "nope"], "data path not found")
    refused(["data", "prepare", "-c", trained.config, "--data-dir", trained.config], "unsupported data file")
    refused(["data", "prepare", "-c", trained.config, "--tokenizer", "gpt3"],
            "data.tokenizer = 'gpt3' is not one of char, bpe, gpt2 (did you mean 'gpt2'?)")
    refused(["data", "prepare", "-c", trained.config, "--tokenizer", "gpt2", "-o",
             f"data.tokenizer_dir={tmp_path}"], "GPT-2 tokenizer file missing")


@pytest.mark.parametrize("files, message", [
    ({"vocab.json": "[1]", "merges.txt": "#version: 0.2\n"}, "(vocab.json, merges.txt) is not a readable tokenizer"),
    ({"vocab.json": b"\xff\xfe", "merges.txt": ""}, "stream did not contain valid UTF-8"),
    ({"vocab.json": '{"a": 0}', "merges.txt": "garbage\n"}, "Merges text file invalid at line 1"),
    ({"tokenizer.json": "{}"}, "tokenizer.json is not a readable tokenizer file"),
])
def test_gpt2_tokenizer_files_that_are_not(files: dict, message: str, write, refused, trained, tmp_path) -> None:
    for name, content in files.items():
        write(f"gpt2/{name}", content)
    refused(["data", "prepare", "-c", trained.config, "--tokenizer", "gpt2", "-o",
             f"data.tokenizer_dir={tmp_path / 'gpt2'}"], message)


def test_a_corpus_shorter_than_one_block(write, refused, trained, cli, tmp_path) -> None:
    corpus = write("short.txt", f"Hi.{SEPARATOR}Yo.")
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    assert cli("data", "prepare", "-c", trained.config, "--data-dir", corpus, "-o", cache).exit_code == 0
    refused(["train", "-c", trained.config, "--data-dir", corpus, "-o", cache, "--save_dir", tmp_path / "run"],
            "fewer than data.block_size + 1 = 33; use more data or a smaller block_size")


def _prepare_interrupted_after(sigint_during, split_file: str, cache: Path, config: Path):
    """`tinygpt data prepare` in a real process that gets SIGINT right after it has written `split_file`."""
    return sigint_during("tinygpt_mlx.data.prepare._write_tokens", f"path.name == {split_file!r}",
                         ["data", "prepare", "-c", config, "-o", f"data.cache_dir={cache}", "-o", "data.tokenizer=bpe",
                          "-o", "data.bpe_vocab_size=300"])


def test_ctrl_c_during_data_prepare_leaves_the_cache_as_it_was(trained, sigint_during, tmp_path) -> None:
    cache = tmp_path / "cache"
    done = _prepare_interrupted_after(sigint_during, "train.bin", cache, trained.config)
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert done.stderr.strip() == "interrupted" and "Traceback" not in done.stderr
    assert not cache.exists()  # the folder it created is gone again, with the half-written token files

    # An existing prepared folder is replaced only once a complete one is ready.
    cache.mkdir()
    (cache / "keep.txt").write_text("mine")
    done = _prepare_interrupted_after(sigint_during, "val.bin", cache, trained.config)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", done.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["keep.txt"]


def test_prepare_writes_a_complete_folder_in_one_rename(trained, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    done = cli("data", "prepare", "-c", trained.config, "-o", f"data.cache_dir={cache}")
    assert done.exit_code == 0, done.output
    (folder,) = cache.iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "tokenizer", "train.bin", "val.bin"]
    assert (folder / "train.bin").stat().st_size == 2 * meta["splits"]["train"]["tokens"]


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".txt", ".jsonl"]), content=st.binary(max_size=300) | st.text(max_size=300))
def test_any_corpus_bytes_are_prepared_or_refused_never_a_traceback(suffix, content, trained, cli, user_error,
                                                                     tmp_path) -> None:
    corpus = tmp_path / f"fuzz{suffix}"
    corpus.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    result = cli("data", "prepare", "-c", trained.config, "--data-dir", corpus, "-o",
                 f"data.cache_dir={tmp_path / 'cache'}")
    if result.exit_code != 0:
        user_error(result)
