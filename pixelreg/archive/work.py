"""The work of a chunked `predict`: what to do (`Settings`, `Chunk`s of frames) and where the
finished chunks wait (`WorkFolder`).

A chunk is a run of whole batches of one file (`Frames.batch_starts`), so that it is read and
localized in exactly the pieces the whole file is: the table assembled from the chunks is the
one `predict` writes in one process, row for row, whatever the chunking. The work folder,
NAME.parts beside --out, holds `plan.json` (the checkpoint, the settings, each file's size and
modification time, the chunks) and one .npz per finished chunk (its localizations), each
written to a temporary name and moved into place: a chunk is in the folder whole or not at
all, so a run that stops at any moment can be resumed (`--resume`) without redoing a
finished chunk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import atomic_path, make_folders, remove_folders
from pixelreg.io.frames import Frames, open_frames
from pixelreg.io.locs import LOCS_DTYPE, Localizations

CHUNK_FRAMES = 1000  # frames a chunk: 10 to 100 chunks for a movie of 10,000 to 100,000 frames


@dataclass(frozen=True)
class Settings:
    """How a worker reads: `Localizer.load`'s arguments, as plain values that travel to other
    processes and machines (the checkpoint's path must be one they can read)."""

    checkpoint: str
    device: str = "auto"
    threshold: float | None = None
    mirror: bool | None = None
    precision: str = "auto"
    camera: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """Frames `first` up to `last` of the `movie`-th input file."""

    movie: int
    path: str
    counts: bool
    first: int
    last: int

    @property
    def name(self) -> str:
        """Its part's file name in the work folder."""
        return f"{self.movie:05d}-{self.first:010d}.npz"

    @property
    def frames(self) -> int:
        return self.last - self.first


def plan_chunks(movies: list[Frames], chunk_frames: int = CHUNK_FRAMES) -> list[Chunk]:
    """The files' frames cut into chunks of about `chunk_frames` (whole batches of
    `Frames.batches`, at least one), file by file."""
    if chunk_frames < 1:
        raise PixelregError(f"--chunk-frames must be 1 or more, got {chunk_frames}")
    chunks = []
    for index, movie in enumerate(movies):
        where = str(movie.path.resolve())  # as a worker elsewhere finds it on a shared disk
        starts = movie.batch_starts()
        first = starts[0]
        for start in starts[1:]:
            if start - first >= chunk_frames or start == starts[-1]:
                chunks.append(Chunk(index, where, movie.counts, first, start))
                first = start
    return chunks


_LOADED: dict[Settings, Any] = {}  # a worker process's models: each loaded once


def localize_chunk(settings: Settings, chunk: Chunk, folder: str) -> dict[str, Any]:
    """Localize one chunk and write its part into the work folder (run on a worker): what it
    took, by stage, and who did it."""
    from pixelreg.localize import Localizer

    started = time.perf_counter()
    localizer = _LOADED.get(settings)
    if localizer is None:
        roomy_heap()
        localizer = Localizer.load(
            Path(settings.checkpoint),
            settings.device,
            settings.threshold,
            settings.mirror,
            settings.precision,
            dict(settings.camera) or None,
        )
        _LOADED[settings] = localizer
    loaded = time.perf_counter()
    frames = open_frames(chunk.path, chunk.counts).part(chunk.first, chunk.last)
    stages: dict[str, float] = {}
    batches = list(localizer.localize(frames, seconds=stages))
    localized = time.perf_counter()
    locs = np.concatenate([batch.locs for batch in batches]) if batches else np.zeros(0, LOCS_DTYPE)
    given = batches[0].given if batches else ()
    with atomic_path(Path(folder) / chunk.name) as tmp, open(tmp, "wb") as stream:
        np.savez(stream, locs=locs, given=np.array(given, dtype=str))
    seconds = {**stages, "load": loaded - started, "write": time.perf_counter() - localized}
    return {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "frames": chunk.frames,
        "seconds": seconds,
        "task_seconds": time.perf_counter() - started,
    }


def roomy_heap() -> None:
    """Let glibc keep the network's activations' memory between batches. Dask's nanny starts
    workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes glibc's mmap threshold at
    128 KiB: every activation tensor is then mapped and unmapped afresh, page fault by page
    fault, and the network runs 2.3 times slower (6.7 against 15.3 frames/s of 512x512 on one
    thread). Raising both thresholds (mmap for blocks over 32 MiB only, trimming past 256 MiB)
    undoes that. Not glibc (macOS, musl): nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is not None:
        mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD


class WorkFolder:
    """NAME.parts beside --out: the plan and the finished chunks (see the module's docstring)."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(out.name + ".parts")
        self.plan = self.path / "plan.json"
        self.created: Path | None = None  # the topmost folder this run made, the folder or above

    def start(self, settings: Settings, movies: list[Frames], chunks: list[Chunk], resume: bool) -> set[str]:
        """The folder made for this work, or (with `resume`) the one of the same work found:
        the names of the chunks already finished."""
        plan = {
            "checkpoint": _stamp(Path(settings.checkpoint)),
            "settings": dataclasses.asdict(settings),
            "files": [_stamp(movie.path) for movie in movies],
            "chunks": [[c.movie, c.first, c.last] for c in chunks],
        }
        plan = json.loads(json.dumps(plan))  # as it reads back: tuples become lists
        if self.path.exists() and not self.path.is_dir():
            raise PixelregError(f"{self.path} is a file, not a work folder; move it away")
        if self.path.is_dir():
            if not resume:
                raise PixelregError(
                    f"{self.path} holds the chunks of an earlier run: give --resume to go on from "
                    "them, or remove it to start again"
                )
            try:
                found = json.loads(self.plan.read_text())
            except (OSError, ValueError):
                raise PixelregError(
                    f"{self.path} has no readable plan.json; remove it to start again"
                ) from None
            if found != plan:
                raise PixelregError(
                    f"{self.path} was made for other work (other files, checkpoint, settings or "
                    "--chunk-frames, or the files have changed since); remove it to start again"
                )
            names = {chunk.name for chunk in chunks}
            return {path.name for path in self.path.iterdir() if path.name in names}
        if self.path.is_symlink() or self.path.exists():
            raise PixelregError(f"{self.path} is in the way of the work folder; move it away")
        self.created = make_folders(self.path, f"cannot make {self.path}")
        with atomic_path(self.plan) as tmp:
            tmp.write_text(json.dumps(plan, indent=1) + "\n")
        return set()

    def parts(
        self, chunks: list[Chunk], movie: int, path: str, columns: tuple[str, ...]
    ) -> Iterator[Localizations]:
        """The localizations of the `movie`-th file's chunks, in the order of its frames."""
        for chunk in chunks:
            if chunk.movie != movie:
                continue
            where = self.path / chunk.name
            try:
                with np.load(where, allow_pickle=False) as part:
                    locs, given = part["locs"], tuple(str(g) for g in part["given"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                raise PixelregError(
                    f"{where} is damaged; remove it and --resume to redo that chunk"
                ) from None
            if locs.dtype != LOCS_DTYPE or not set(given) <= set(columns):
                raise PixelregError(
                    f"{where} holds another layout of localizations (another pixelreg version?); "
                    "remove it and --resume to redo that chunk"
                )
            yield Localizations(path, locs, columns, given)

    def remove(self) -> None:
        """The folder gone, once the table it made is in place."""
        shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        """The folder gone, and the folders above it that this run made (a run that finished
        no chunk leaves nothing)."""
        self.remove()
        remove_folders(self.created if self.created is not None and self.created != self.path else None)


def _stamp(path: Path) -> dict[str, Any]:
    """A file as the plan records it: its path, size and modification time (changed, the work
    must start again)."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
