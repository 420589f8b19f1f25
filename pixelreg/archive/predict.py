"""`predict` over an archive: the movies cut into chunks, the chunks localized here or on a
Dask cluster into the work folder, and the table assembled from them once every chunk is in,
as `predict` writes it in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from pixelreg.archive.cluster import Report, run_chunks
from pixelreg.archive.work import Chunk, Settings, WorkFolder
from pixelreg.errors import Interrupted
from pixelreg.io.frames import Frames
from pixelreg.io.locs import Localizations
from pixelreg.localize import Localizer


def localize_archive(
    localizer: Localizer,
    settings: Settings,
    movies: list[Frames],
    chunks: list[Chunk],
    out: Path,
    write: Callable[[Callable[[int, Frames], Iterable[Localizations]]], int],
    chunks_done: Callable[[int], None],
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
) -> tuple[int, Report]:
    """Localize `movies` by their `chunks` (`plan_chunks`) into OUT.parts, then `write(source)`
    the table from the parts (`source(i, movie)`: the i-th movie's localizations) and remove
    the folder: the rows written and the run's report. `chunks_done(count)` is told of chunks
    finished (those found at the start too). Ctrl-C leaves the finished chunks and raises
    `Interrupted` saying how to go on; a run that stops before any chunk is finished leaves
    no folder."""
    work = WorkFolder(out)
    finished = work.start(settings, movies, chunks, resume)
    chunks_done(len(finished))
    todo = [chunk for chunk in chunks if chunk.name not in finished]
    try:
        folder = str(work.path.absolute())  # as workers in other folders and machines find it
        report = run_chunks(settings, todo, folder, lambda chunk: chunks_done(1), workers, scheduler)
    except BaseException as exc:
        done = sum((work.path / chunk.name).exists() for chunk in chunks)
        if not done:  # nothing to resume: leave nothing behind
            work.discard()
        if not isinstance(exc, KeyboardInterrupt):
            raise
        if not done:
            raise Interrupted("interrupted before any chunk was finished") from None
        raise Interrupted(
            f"interrupted: {done} of {len(chunks)} chunks are finished in {work.path}; the same "
            "command with --resume goes on from them"
        ) from None
    count = write(lambda index, movie: work.parts(chunks, index, str(movie.path), localizer.columns))
    work.remove()
    return count, report
