"""Atomic file writes: a reader never sees a half-written file, even after `kill -9`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pixelreg.errors import PixelregError


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
    if target.is_symlink():  # realpath stops at a loop of links
        raise PixelregError(f"cannot write {path}: it is a loop of symbolic links")
    if target.exists() and not target.is_file():
        kind = "a directory" if target.is_dir() else "not a regular file"
        shown = str(path) if target == Path(path).absolute() else f"{path} (which leads to {target})"
        raise PixelregError(f"cannot write {shown}: it exists and is {kind}")
    return target


def require_writable_place(path: str | Path) -> Path:
    """Refuse, before any work, an output file that could not be written: no regular file
    (`writable_target`), or in a folder that could not be (`require_writable_folder`)."""
    target = writable_target(path)
    require_writable_folder(target.parent, path)
    return target


def require_writable_folder(folder: Path, shown: str | Path | None = None) -> None:
    """Refuse a folder that could not be made or written in: a part of its path is a file, or the
    nearest folder of it that exists is not this user's to write in. `shown` names the output."""
    shown = folder if shown is None else shown
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise PixelregError(f"cannot write {shown}: a part of its path is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PixelregError(f"cannot write {shown}: permission denied in {folder}")


def make_folders(folder: Path, failure: str) -> Path | None:
    """Create `folder` and its missing parents; the topmost folder created here, or None if
    `folder` existed, so that a job that fails can take back what it made.

    `failure` starts the error message, such as "cannot write runs/x.npz".
    """
    if folder.is_dir():
        return None
    top = folder
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PixelregError(f"{failure}: a part of its path is a file, not a folder") from None
    except OSError as exc:
        raise PixelregError(f"{failure}: {exc.strerror or exc}") from exc
    return top


def remove_folders(created: Path | None) -> None:
    """Take back the folders `make_folders` created (with anything since written in them)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The file gets the permissions a new file gets under the umask (or keeps those of the file
    it replaces), not the owner-only ones of a temporary file.
    """
    target = writable_target(path)
    created = make_folders(target.parent, f"cannot write {path}")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        remove_folders(created)
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
        remove_folders(created)
        raise


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_together(writes: list[tuple[Path, Callable[[Path], Any]]]) -> None:
    """Write several files as one: each `write(tmp_path)` to a temporary name beside its path,
    and only when all have succeeded are they moved into place; a failure replaces none."""
    with ExitStack() as stack:
        for path, write in writes:
            write(stack.enter_context(atomic_path(path)))


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
