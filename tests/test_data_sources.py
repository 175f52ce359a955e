"""Sources: local txt/jsonl/parquet reading, split detection, the seeded split, and the offline hub path."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tinygpt_mlx.config import DataConfig
from tinygpt_mlx.data import sources
from tinygpt_mlx.data.sources import load_split, resolve_source
from tinygpt_mlx.errors import UserError


def _txt(path: Path, stories: list[str]) -> Path:
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def test_folder_uses_named_split_files(tiny_corpus):
    cfg = DataConfig(data_dir=str(tiny_corpus))
    source = resolve_source(cfg)
    assert [p.name for p in source.train] == ["tinystories_train.txt"]
    assert [p.name for p in source.validation] == ["tinystories_valid.txt"]
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert (len(train), len(val)) == (24, 13)
    assert train[0].startswith("Once upon a time, Ollie had a pony")
    assert val[-1].startswith("Once upon a time, a fox named Jörg")
    assert all(s == s.strip() and "<|endoftext|>" not in s for s in train + val)
    assert len(load_split(DataConfig(data_dir=str(tiny_corpus), max_stories=7), "validation")) == 7


def test_shared_excerpt_has_the_documented_stories(tinystories_dir):
    cfg = DataConfig(data_dir=str(tinystories_dir))
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert (len(train), len(val)) == (4042, 800)  # counts from SOURCES.md
    assert train[0].startswith("One day, a little girl named Lily found a needle")
    assert val[0].startswith("Spot. Spot saw the shiny car")


def test_env_var_points_tinystories_at_local_files(tmp_path, monkeypatch):
    _txt(tmp_path / "my_train.txt", ["a b", "c"])
    _txt(tmp_path / "my_val.txt", ["v"])
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(tmp_path))
    assert load_split(DataConfig(), "train") == ["a b", "c"]
    assert load_split(DataConfig(), "validation") == ["v"]
    # data.data_dir wins over the environment
    (tmp_path / "sub").mkdir()
    other = _txt(tmp_path / "sub" / "x.txt", ["x1", "x2", "x3", "x4"])
    cfg = DataConfig(data_dir=str(other))
    assert sorted(load_split(cfg, "train") + load_split(cfg, "validation")) == ["x1", "x2", "x3", "x4"]


def test_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": "first story\nwith two lines", "id": 1}, {"text": "  second 🙂 "}, {"text": ""}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pq.write_table(pa.table({"text": ["val one", "val two"]}), tmp_path / "validation.parquet")
    cfg = DataConfig(dataset="local", data_dir=str(tmp_path))
    assert load_split(cfg, "train") == ["first story\nwith two lines", "second 🙂"]
    assert load_split(cfg, "validation") == ["val one", "val two"]


def test_bad_jsonl_and_parquet_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"story": "no text field"}\n')
    with pytest.raises(UserError, match=r"a.jsonl:1 .*'text'"):
        load_split(DataConfig(dataset="local", data_dir=str(tmp_path / "a.jsonl")), "train")
    pq.write_table(pa.table({"story": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(UserError, match="no 'text' column"):
        load_split(DataConfig(dataset="local", data_dir=str(tmp_path / "b.parquet")), "train")


def test_single_file_seeded_split_is_stable_and_disjoint(tmp_path):
    stories = [f"story number {i}" for i in range(200)]
    path = _txt(tmp_path / "all.txt", stories)
    cfg = DataConfig(dataset="local", data_dir=str(path), val_frac=0.1, split_seed=7)
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert sorted(train + val) == sorted(stories) and not set(train) & set(val)
    assert 8 <= len(val) <= 35  # about 10% of 200
    # pinned: the same rule re-derived independently, and a different seed gives a different split
    assert val == [s for s in stories if sources.is_validation(s, 7, 0.1)]
    assert load_split(cfg, "validation") == val
    cfg2 = DataConfig(dataset="local", data_dir=str(path), val_frac=0.1, split_seed=8)
    assert load_split(cfg2, "validation") != val
    # order and other stories do not move a story across the split
    _txt(path, list(reversed(stories)) + ["extra"])
    assert set(val) <= set(load_split(cfg, "validation")) | {"extra"}


def test_train_only_folder_falls_back_to_seeded_split(tmp_path):
    _txt(tmp_path / "tinystories_train.txt", [f"s{i}" for i in range(50)])
    _txt(tmp_path / "notes.txt", ["ignored"])
    cfg = DataConfig(dataset="local", data_dir=str(tmp_path), val_frac=0.2)
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert len(train) + len(val) == 50 and val and "ignored" not in train + val


def test_missing_path_and_empty_split(tmp_path):
    with pytest.raises(UserError, match="data path not found"):
        load_split(DataConfig(dataset="local", data_dir=str(tmp_path / "nope")), "train")
    with pytest.raises(UserError, match="no .* files in"):
        load_split(DataConfig(dataset="local", data_dir=str(tmp_path)), "train")
    _txt(tmp_path / "train.txt", ["only"])
    _txt(tmp_path / "valid.txt", [])
    with pytest.raises(UserError, match="validation split of local:.* has no stories"):
        load_split(DataConfig(dataset="local", data_dir=str(tmp_path)), "validation")


def test_offline_hub_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.delenv("TINYGPT_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def unreachable(address, timeout=None):
        calls.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(UserError, match="unreachable.*TINYGPT_DATA_DIR") as err:
        load_split(DataConfig(dataset="tinystories"), "train")
    assert calls == [(("huggingface.co", 443), 3.0)]
    assert "data.data_dir" in str(err.value) and "\n" not in str(err.value)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls.clear()
    with pytest.raises(UserError, match="disabled"):
        load_split(DataConfig(dataset="tinystories"), "validation")
    assert calls == []  # no network attempt at all when offline mode is set


def test_local_dataset_needs_a_path(monkeypatch):
    monkeypatch.setenv("TINYGPT_DATA_DIR", "/somewhere")  # ignored: the env var is for dataset tinystories
    with pytest.raises(UserError, match="needs data.data_dir"):
        load_split(DataConfig(dataset="local"), "train")
