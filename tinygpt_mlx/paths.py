"""Output paths, checked before a command writes anything, and cleaned up when the command fails.

Every command that writes takes a folder (or a file) from the user. `check_output_dir` refuses one that is a
file, lies inside a file or cannot be written, in one sentence naming the option; `output_dir` also creates
the folder and, when the command then fails, removes the folders it created as long as they are still
empty, so a failed command leaves nothing behind. `folder_lock` keeps two processes out of one folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinygpt_mlx.errors import UserError


def _existing_ancestor(path: Path) -> Path:
    """The path itself or its nearest ancestor that exists (as anything: folder, file, link)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def _check(path: Path, option: str, shown: Path) -> None:
    """The checks of check_output_dir on folder `path`, naming `shown` (the folder or a file in it)."""
    found = _existing_ancestor(path)
    if found.is_symlink() and not found.exists():
        raise UserError(f"{option} {shown}: {found} is a link to nothing (broken or looping)")
    if found == path and not path.is_dir():
        raise UserError(f"{option} {shown} is a file, not a folder; choose a folder" if shown == path else
                        f"{option} {shown} lies inside {found}, which is a file, not a folder")
    if found != path and not found.is_dir():
        raise UserError(f"{option} {shown} lies inside {found}, which is a file, not a folder")
    if not os.access(found, os.W_OK | os.X_OK):
        where = "" if found == shown else f" (its nearest existing folder {found} is not writable)"
        raise UserError(f"{option} {shown} cannot be written{where}: permission denied or a read-only disk")


def check_output_dir(path: str | Path, option: str) -> Path:
    """Refuse a folder to write into that is a file, lies inside a file, or cannot be created or written."""
    path = Path(path).expanduser().absolute()
    _check(path, option, path)
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse a file to write that is a folder, lies inside a file, or cannot be created or written."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    _check(path.parent, option, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} cannot be written: permission denied")
    return path


def _created_by(path: Path) -> Path | None:
    """The topmost folder that creating `path` would add (None when it exists)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_empty(top: Path) -> None:
    """Remove `top` and the folders below it, deepest first, while they are empty."""
    for folder in sorted((p for p in top.rglob("*") if p.is_dir() and not p.is_symlink()),
                         key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: the failed command wrote something worth keeping
    try:
        top.rmdir()
    except OSError:
        pass


@contextmanager
def output_dir(path: str | Path, option: str) -> Iterator[Path]:
    """check_output_dir, create the folder, and remove what this created if the body fails while it is empty."""
    folder = check_output_dir(path, option)
    created = _created_by(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created is not None:
            _remove_empty(created)
        raise


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the folder itself: no lock file) or refuse at once."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(f"another process is {what} {folder}; wait for it to finish or choose another "
                            "folder") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
