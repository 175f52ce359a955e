"""Reading a user's config file strictly: UTF-8, bounded size, no duplicate keys, no alias bombs.

YAML anchors and aliases let a few hundred bytes stand for billions of values (the "billion laughs" file);
PyYAML shares the aliased objects, so loading is cheap, but anything that walks or prints the result is
not. The expanded size is counted on the composed node graph before a single Python object is built.
Duplicate keys are refused rather than silently resolved to the last one.
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a config or sweep file is a few kilobytes
MAX_NODES = 100_000  # values after expanding every alias

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 6, 6, 3


def show(value: Any) -> str:
    """repr(value) cut to a readable length, for error messages about user values."""
    return _short.repr(value)


class FileProblem(ValueError):
    """A config file that cannot be read as a mapping (the message names the file and what is wrong)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)} (each key may appear once)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values the node stands for with every alias expanded (memoised, so shared nodes cost once)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def parse_yaml(text: str) -> Any:
    """YAML text -> Python values with the strict rules above; raises yaml.YAMLError or FileProblem."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise FileProblem(f"expands to more than {MAX_NODES:,} values through YAML aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FileProblem(f"duplicate key {show(key)} (each key may appear once)")
        out[key] = value
    return out


def read_mapping_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON file that must hold a mapping (empty file: {}); FileProblem names what is wrong."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise FileProblem(f"{path} is {size:,} bytes; a config file is at most {MAX_BYTES:,}")
        data = path.read_bytes()
    except OSError as err:
        raise FileProblem(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileProblem(f"{path} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None
    try:
        raw = json.loads(text, object_pairs_hook=_json_pairs) if path.suffix == ".json" else parse_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, yaml.MarkedYAMLError) and err.problem:
            first_line = f"{err.problem} (line {err.problem_mark.line + 1})" if err.problem_mark else err.problem
        raise FileProblem(f"cannot parse {path}: {first_line}") from None
    except FileProblem as err:
        raise FileProblem(f"{path}: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FileProblem(f"{path} must hold a mapping (key: value lines), not a {type(raw).__name__}: {show(raw)}")
    return raw
