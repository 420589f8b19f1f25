"""`pixelreg calibrate`: a movie's camera, PSF, photons and density, written as a spec to train on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pixelreg.cli.app import command, console, emit, say
from pixelreg.cli.options import AsJson, Quiet, refuse_overwriting
from pixelreg.cli.tables import calibration_table, twin_table
from pixelreg.errors import PixelregError
from pixelreg.fit.defaults import CALIBRATION_FRAMES, CALIBRATION_SIDE
from pixelreg.io.files import write_together
from pixelreg.io.frames import read_first_frames
from pixelreg.simulate.camera import check_camera_values


@command
def calibrate(
    files: Annotated[
        list[Path],
        typer.Argument(help="Raw frames from the camera: TIFF stacks (or .npy) of ADU.", show_default=False),
    ],
    out: Annotated[
        Path, typer.Option(help="The spec JSON to write: the data options to train on (`train --spec`).")
    ] = Path("spec.json"),
    baseline: Annotated[
        float | None, typer.Option(help="The camera's offset in ADU, if known; estimated otherwise.")
    ] = None,
    e_per_adu: Annotated[
        float | None,
        typer.Option(help="Photoelectrons per ADU (after any EM gain), if known; estimated otherwise."),
    ] = None,
    em_gain: Annotated[
        float,
        typer.Option(help="The EM gain of an EMCCD (0: none). It cannot be told from the frames: give it."),
    ] = 0.0,
    frames: Annotated[
        int,
        typer.Option(
            help="Read at most this many frames, the first of the files (of larger frames, the central 512x512)."
        ),
    ] = CALIBRATION_FRAMES,
    figure: Annotated[
        Path | None,
        typer.Option(help="Where to draw what was fitted (PNG); default: beside --out.", show_default=False),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Estimate a movie's camera (baseline, gain, read noise), PSF, photons, background and spots
    per frame from its raw frames, and write them as a spec to train a model for it.

    Example: pixelreg calibrate movie.tif --out spec.json && pixelreg train --spec spec.json
    """
    if frames < 1:
        raise PixelregError(f"--frames must be at least 1, got {frames}")
    check_camera_values(baseline=baseline, e_per_adu=e_per_adu, em_gain=em_gain)
    figure = figure if figure is not None else out.with_suffix(".png")
    if figure.suffix.lower() != ".png":
        raise PixelregError(f"--figure is drawn as PNG; give a .png path, got {figure}")
    if Path(os.path.realpath(figure)) == Path(os.path.realpath(out)):
        raise PixelregError(f"--out and --figure both name {out}; give the spec a .json name (or --figure)")
    for target, flag in ((out, "--out"), (figure, "--figure")):
        refuse_overwriting(target, files, flag)
    # Every option, output and file header is checked before torch is imported
    pixels = read_first_frames(files, frames, CALIBRATION_SIDE)

    from pixelreg.fit.calibrate import calibrate as estimate
    from pixelreg.plots.calibration import plot_calibration

    result = estimate(pixels, baseline, e_per_adu, em_gain, say(quiet))
    for warning in result.warnings:
        sys.stderr.write(f"Warning: {warning}\n")
    if result.twin is not None and not (quiet and result.twin.agrees):
        console.print(twin_table(result.twin))
    result.require_twin()
    spec = json.dumps(result.summary(), indent=2, allow_nan=False) + "\n"
    write_together(
        [
            (figure, lambda tmp: plot_calibration(result, tmp)),
            (out, lambda tmp: tmp.write_text(spec, encoding="utf-8")),
        ]
    )
    if not quiet:
        console.print(calibration_table(result))
    emit({"path": str(out), "figure": str(figure), **result.summary()} if as_json else str(out), as_json)
