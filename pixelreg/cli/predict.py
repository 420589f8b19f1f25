"""`pixelreg predict`: a localization table of image files and movies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pixelreg.archive.work import CHUNK_FRAMES
from pixelreg.cli.app import command, console, emit, reader_gone
from pixelreg.cli.options import (
    AsJson,
    CheckpointArg,
    Device,
    Quiet,
    Threshold,
    check_pixel_size,
    given_on_command_line,
    refuse_overwriting,
)
from pixelreg.cli.progress import FrameProgress
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM
from pixelreg.io.checkpoint_header import ModelHeader, check_values
from pixelreg.io.frames import IMAGE_FORMATS, open_frames
from pixelreg.io.runs import resolve_checkpoint
from pixelreg.io.tables import FILE_FORMATS, chosen_format

FORMAT_HELP = (
    "csv: pixelreg's table, one row per localization (path,index,x,y,confidence,photons,"
    "background,uncertainty; px; empty where the model has no such output). thunderstorm: "
    "ThunderSTORM's CSV (id, frame 1-based, x/y/sigma/uncertainty in nm at --pixel-size, "
    "ImageJ's pixel convention: the centre of pixel 0 at half a pixel; several files number "
    "their frames on as one movie), which ThunderSTORM, Picasso and SMAP read. picasso: Picasso's "
    "HDF5 table (px, frames 0-based, pixel centres on integers) and its YAML beside it, in --out."
)


Workers = Annotated[
    int | None,
    typer.Option(
        help="Localize on a local Dask cluster of this many worker processes, each loading the model "
        "once: chunks of frames go to OUT.parts, then the table to --out.",
        show_default=False,
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="Localize on the running Dask cluster of this scheduler (tcp://HOST:PORT; workers on "
        "other machines, or started by dask-jobqueue), which must read the checkpoint and movies at "
        "the same absolute paths.",
        show_default=False,
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume", help="Go on from the chunks an interrupted run left in OUT.parts, redoing none."
    ),
]
ChunkFrames = Annotated[
    int, typer.Option(help="With --workers, --scheduler or --resume: frames a chunk (whole batches).")
]
Output = Annotated[
    Path | None,
    typer.Option(help="Write the table to this file (atomically) instead of stdout.", show_default=False),
]
PixelSize = Annotated[
    float, typer.Option(help="With --format thunderstorm or picasso: the camera's pixel size in nm.")
]
Mirror = Annotated[
    bool | None,
    typer.Option(
        "--mirror/--no-mirror",
        help="Offsets model: read each frame with its three mirror images and average, or once (four "
        "times faster); default: as the model was trained and validated (`train --no-mirror`).",
        show_default=False,
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        help="Offsets model: the convolutions' arithmetic. auto: bfloat16 where the hardware has it "
        "(a CPU with AVX512-BF16 or AMX, a recent GPU; about twice as fast, positions within "
        "thousandths of a pixel), else float32.",
    ),
]
Baseline = Annotated[
    float | None,
    typer.Option(help="Camera model: the ADU a dark pixel reads today, if not the training data's."),
]
EPerAdu = Annotated[
    float | None, typer.Option(help="Camera model: photoelectrons per A/D count, if not the training data's.")
]
EmGain = Annotated[
    float | None, typer.Option(help="Camera model: EM gain (0 or 1: none), if not the training data's.")
]


@command
def predict(
    ctx: typer.Context,
    checkpoint: CheckpointArg,
    images: Annotated[list[Path], typer.Argument(help=IMAGE_FORMATS, show_default=False)],
    threshold: Threshold = None,
    baseline: Baseline = None,
    e_per_adu: EPerAdu = None,
    em_gain: EmGain = None,
    out: Output = None,
    table_format: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "csv",
    pixel_size: PixelSize = PIXEL_SIZE_NM,
    mirror: Mirror = None,
    precision: Precision = "auto",
    device: Device = "auto",
    workers: Workers = None,
    scheduler: Scheduler = None,
    resume: Resume = False,
    chunk_frames: ChunkFrames = CHUNK_FRAMES,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Locate the points in image files and movies, one row per localization: CSV on stdout or
    in --out, or JSON. Frames are read a chunk at a time and large frames in tiles, so memory
    stays flat in the movie's length.

    With --workers N (a local Dask cluster) or --scheduler ADDRESS (a running one), the movies
    are cut into chunks of frames that workers localize into OUT.parts beside --out; the table
    is assembled when every chunk is in, the same as one process writes it. --resume goes on
    from the chunks an interrupted run left.

    Example: pixelreg predict runs/train movie.tif --out locs.csv
    """
    if table_format not in FILE_FORMATS:
        raise PixelregError(f"--format must be one of {', '.join(FILE_FORMATS)}, got {table_format!r}")
    check_pixel_size(pixel_size)
    if as_json and (out is not None or table_format != "csv"):
        raise PixelregError("--json prints the rows on stdout; it does not combine with --out or --format")
    if given_on_command_line(ctx, "pixel_size") and table_format == "csv":
        raise PixelregError("--pixel-size applies with --format thunderstorm or picasso only")
    if table_format == "picasso":
        if out is None:
            raise PixelregError("--format picasso writes an HDF5 file and its YAML; give --out NAME.hdf5")
        chosen_format(out, table_format, "csv")
    chunked = workers is not None or scheduler is not None or resume
    if chunked and out is None:
        raise PixelregError("--workers, --scheduler and --resume write the table to --out; give --out")
    if workers is not None and scheduler is not None:
        raise PixelregError("--workers starts a cluster here and --scheduler uses a running one; give one")
    if workers is not None and workers < 1:
        raise PixelregError(f"--workers must be 1 or more, got {workers}")
    if chunk_frames < 1:
        raise PixelregError(f"--chunk-frames must be 1 or more, got {chunk_frames}")
    if given_on_command_line(ctx, "chunk_frames") and not chunked:
        raise PixelregError("--chunk-frames applies with --workers, --scheduler or --resume only")
    camera = {
        k: v
        for k, v in (("baseline", baseline), ("e_per_adu", e_per_adu), ("em_gain", em_gain))
        if v is not None
    }
    # Every option, path and file header is checked before torch is imported (a second or more)
    check_values(threshold, precision, camera, device)
    header = ModelHeader.read(resolve_checkpoint(checkpoint))
    header.check_settings(threshold, mirror, precision, camera, device)
    if out is not None:
        refuse_overwriting(out, [resolve_checkpoint(checkpoint), *images])
    movies = [open_frames(path, counts=header.camera is not None) for path in images]

    from pixelreg.localize import Localizer, write_file

    localizer = Localizer.load(resolve_checkpoint(checkpoint), device, threshold, mirror, precision, camera)
    localizer.check(movies)
    frames = sum(movie.count for movie in movies)
    if chunked:
        assert out is not None
        from pixelreg.archive.predict import localize_archive
        from pixelreg.archive.work import Settings, plan_chunks
        from pixelreg.cli.tables import archive_table

        settings = Settings(
            str(resolve_checkpoint(checkpoint).resolve()),
            device,
            threshold,
            mirror,
            precision,
            tuple(sorted(camera.items())),
        )
        chunks = plan_chunks(movies, chunk_frames)
        with FrameProgress(len(chunks), quiet, unit="chunks") as progress:
            count, report = localize_archive(
                localizer,
                settings,
                movies,
                chunks,
                out,
                lambda source: write_file(localizer, movies, out, table_format, pixel_size, source=source),
                progress,
                resume,
                workers,
                scheduler,
            )
        if not quiet:
            console.print(archive_table(report.as_dict()))
    else:
        with FrameProgress(frames, quiet) as progress:

            def done(count: int) -> None:  # after each batch of frames
                progress(count)
                if out is None and reader_gone():  # `| head`: stop now, even if no row is due
                    raise BrokenPipeError

            if as_json:
                rows = [row for movie in movies for row in localizer.rows(movie, done)]
                emit(rows, True)
                return
            if out is None:
                localizer.write_table(movies, sys.stdout, table_format, pixel_size, done)
                return
            count = write_file(localizer, movies, out, table_format, pixel_size, progress)
    if not quiet:
        plural = "s" * (count != 1), "s" * (frames != 1)
        console.print(f"{count:,} localization{plural[0]} in {frames:,} frame{plural[1]} written to {out}")
    emit(str(out), False)
    if table_format == "picasso":
        from pixelreg.io.picasso import yaml_path

        emit(str(yaml_path(out)), False)
