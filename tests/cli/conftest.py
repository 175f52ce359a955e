"""Driving `tinygpt` in this process as a hostile but realistic user would, and checking what it leaves behind.

`refused(args, needles...)` runs one command with typer's CliRunner and asserts the contract of a user
error: exit code 2, `error: ...` on stderr in one line (the list, for several config problems), no
traceback, and every file and folder under the watched roots exactly as it was (nothing changed, no
empty output folder left). `trained` is one tiny run, trained once per session and never modified:
cases that need a damaged checkpoint damage a copy of it (`run_copy`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from tinygpt_mlx.cli import app
from tinygpt_mlx.config import dump_config
from tinygpt_mlx.train.trainer import train

RUNNER = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def tinygpt(*args: object) -> Result:
    """Run `tinygpt ARGS` in this process."""
    return RUNNER.invoke(app, [str(a) for a in args])


def snapshot(*roots: Path) -> dict[str, object]:
    """Every path under the roots: file bytes, link targets, folders (a new empty folder shows too)."""
    seen: dict[str, object] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                seen[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[str(path)] = "folder"
            else:
                seen[str(path)] = path.read_bytes()
    return seen


def assert_user_error(result: Result, *needles: str, code: int = 2) -> str:
    """The exit code and a message of one line (or a config's list) containing every needle; the message."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr
    assert "Traceback" not in result.output
    lines = err.strip().splitlines()
    assert lines and lines[-1 if code == 130 else 0].startswith("error:" if code == 2 else "interrupted"), err
    if code == 2 and not lines[0].rstrip().endswith("config errors:"):
        assert len(lines) == 1, err  # one problem, one line
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="session")
def cli() -> Callable[..., Result]:
    """cli(*args) -> the CliRunner result of `tinygpt ARGS`, run in this process."""
    return tinygpt


def run_with_sigint(target: str, when: str, args: Sequence[object], signals: int = 1) -> subprocess.CompletedProcess:
    """`tinygpt ARGS` in a real process that sends itself `signals` SIGINTs right after a call of `target`
    (module.function, its first argument `path`) for which the Python expression `when` is true."""
    module, function = target.rsplit(".", 1)
    driver = "\n".join([
        "import os, signal, sys",
        f"import {module} as target",
        "from tinygpt_mlx.cli import main",
        f"original = target.{function}",
        "def interrupted(path, *args, **kwargs):",
        "    result = original(path, *args, **kwargs)",
        f"    if {when}:",
        f"        for _ in range({signals}):",
        "            os.kill(os.getpid(), signal.SIGINT)",
        "    return result",
        f"target.{function} = interrupted",
        f"sys.argv = ['tinygpt', *{[str(a) for a in args]!r}]",
        "main()",
    ])
    return subprocess.run([sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def sigint_during() -> Callable[..., subprocess.CompletedProcess]:
    """sigint_during(target, when, args, signals=1): see run_with_sigint."""
    return run_with_sigint


@pytest.fixture(scope="session")
def user_error() -> Callable[..., str]:
    """user_error(result, *needles, code=2) -> stderr, after asserting the user-error contract on a result."""
    return assert_user_error


@dataclass
class Trained:
    """The session's tiny run: its root folder, run folder, config file and the config's token cache."""

    root: Path
    run: Path
    config: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, make_config) -> Trained:
    """A 2-step run of the suite's tiny config (character tokenizer, tiny corpus); never modified by a case."""
    root = tmp_path_factory.mktemp("trained")
    cfg = make_config(root, schedule={"max_steps": 2})
    config = root / "tiny.yaml"
    dump_config(cfg, config)
    train(cfg, live=False)
    return Trained(root, root / "run", config)


@pytest.fixture
def run_copy(trained: Trained, tmp_path: Path) -> Callable[[str], Path]:
    """run_copy(name) -> a copy of the trained run folder at tmp_path/name (links kept), to damage."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(trained.run, tmp_path / name, symlinks=True))

    return copy


@pytest.fixture
def refused(tmp_path: Path, trained: Trained) -> Callable[..., str]:
    """refused(args, *needles, code=2, watch=()) -> stderr, after asserting the user-error contract.

    tmp_path and the trained run are always watched: a refused command must leave them byte for byte.
    """

    def check(args: Sequence[object], *needles: str, code: int = 2, watch: Sequence[Path] = ()) -> str:
        roots = [tmp_path, trained.root, *watch]
        before = snapshot(*roots)
        err = assert_user_error(tinygpt(*args), *needles, code=code)
        after = snapshot(*roots)
        assert after.keys() == before.keys(), (sorted(after.keys() - before.keys()),
                                               sorted(before.keys() - after.keys()))
        changed = [path for path in before if before[path] != after[path]]
        assert not changed, changed
        return err

    return check


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """write(name, text or bytes) -> tmp_path/name with that content."""

    def make(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return make
