"""What every bench shares: an output folder that is new or empty, and results written into it
whole or not at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelreg.errors import PixelregError
from pixelreg.io.files import make_folders, remove_folders, writable_target, write_json


def require_empty_folder(out: Path, filename: str | None = None) -> None:
    """Refuse, before any work, an output folder that is not empty (or new), or whose results
    file `filename` could not be written."""
    if filename is not None:
        writable_target(out / filename)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PixelregError(f"{out} is not an empty folder; choose another --out or remove it")


def write_results(out: Path, filename: str, run: Callable[[], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """`run()`'s results written to out/filename, the folder made for it; a bench that does not
    finish leaves no half of itself."""
    created = make_folders(out, f"cannot create {out}")
    try:
        results = run()
        return write_json(out / filename, results), results
    except BaseException:
        remove_folders(created)
        raise
