"""`pixelreg plot`: a run's figures, or a localization table's super-resolution rendering."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from pixelreg.cli.app import command, emit, say
from pixelreg.cli.options import (
    Device,
    Quiet,
    TablePixelSize,
    check_pixel_size,
    given_on_command_line,
    refuse_overwriting,
)
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM
from pixelreg.io.runs import RunDir
from pixelreg.io.tables import PICASSO_SUFFIXES

Figure = Annotated[
    Path | None,
    typer.Option(help="Table: the figure to write; default: the table's name with .png.", show_default=False),
]


@command
def plot(
    ctx: typer.Context,
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory made by `pixelreg train`, or a localization table: pixelreg's or "
            "ThunderSTORM's CSV, or Picasso's HDF5 (.hdf5).",
            metavar="RUN_DIR|LOCS",
        ),
    ],
    zoom: Annotated[
        int, typer.Option(help="Table: the rendering's pixels per camera pixel, along each axis (1 to 50).")
    ] = 10,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    out: Figure = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Draw a run's figures into RUN_DIR/figures (evaluating best.pt first if needed), or a
    localization table's super-resolution rendering (each localization a Gaussian of its
    uncertainty on a grid --zoom times finer) beside histograms of photons and uncertainties.

    Example: pixelreg plot runs/train; pixelreg plot locs.csv --zoom 8
    """
    if run_dir.suffix.lower() in (".csv", *PICASSO_SUFFIXES) and not run_dir.is_dir():
        from pixelreg.io.tables import read_table
        from pixelreg.plots.localizations import check_rendering, plot_localizations

        check_pixel_size(pixel_size)
        figure = out if out is not None else run_dir.with_suffix(".png")
        if figure.suffix.lower() != ".png":
            raise PixelregError(f"--out {figure}: the figure is a PNG; give a .png file")
        refuse_overwriting(figure, [run_dir])
        table = read_table(run_dir, pixel_size)
        shape = (  # the frame the localizations lie in: up to the farthest one
            max(1, math.ceil(float(table["y"].max(initial=0.0)) + 0.5)),
            max(1, math.ceil(float(table["x"].max(initial=0.0)) + 0.5)),
        )
        check_rendering(shape, zoom)
        emit(str(plot_localizations(table, shape, figure, zoom, title=run_dir.name)), False)
        return
    for name in ("zoom", "pixel_size", "out"):
        if given_on_command_line(ctx, name):
            raise PixelregError(
                f"--{name.replace('_', '-')} applies to a localization table (.csv, .hdf5) only"
            )
    RunDir(run_dir).require_trained()

    from pixelreg.plots.run import plot_run

    for path in plot_run(run_dir, device, say(quiet)):
        emit(str(path), False)
