"""Atomic file writes: a reader never sees a half-written file, even after `kill -9`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import PixelregError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def writable_target(path: str | Path) -> Path:
    """Where writing `path` really goes: a symlink is followed to its target, which is
    written in place and the link kept; a target that exists and is not a regular file
    (a directory, a device, a pipe) is refused, so that nothing but a file is ever replaced.
    """
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        kind = "a directory" if target.is_dir() else "not a regular file"
        shown = str(path) if target == Path(path).absolute() else f"{path} (which leads to {target})"
        raise PixelregError(f"cannot write {shown}: it exists and is {kind}")
    return target


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The file gets the permissions a new file gets under the umask (or keeps those of the file
    it replaces), not the owner-only ones of a temporary file.
    """
    target = writable_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except (FileExistsError, NotADirectoryError):
        raise PixelregError(
            f"cannot write {path}: a part of its folder path is a file, not a folder"
        ) from None
    except OSError as exc:
        raise PixelregError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write pretty JSON atomically."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def require_file(path: str | Path, what: str) -> Path:
    """Return `path` if it is a readable, non-empty file, else raise a clear PixelregError."""
    path = Path(path)
    if not path.exists():
        raise PixelregError(f"{what} not found: {path}")
    if path.is_dir():
        raise PixelregError(f"{what} {path} is a directory; expected a file")
    if path.stat().st_size == 0:
        raise PixelregError(f"{what} {path} is empty")
    return path
