"""`pixelreg calibrate`: a movie's camera, PSF, photons and density, written as a spec to train on."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pixelreg.cli.app import command, console, emit, say
from pixelreg.cli.options import AsJson, Quiet, refuse_overwriting
from pixelreg.cli.tables import calibration_table
from pixelreg.errors import PixelregError
from pixelreg.fit.defaults import CALIBRATION_FRAMES
from pixelreg.io.files import require_file, writable_target


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
    from pixelreg.fit.calibrate import calibrate as estimate
    from pixelreg.fit.calibrate import read_calibration_frames
    from pixelreg.io.files import write_json
    from pixelreg.plots.calibration import plot_calibration

    if frames < 1:
        raise PixelregError(f"--frames must be at least 1, got {frames}")
    if not (em_gain == 0.0 or 1.0 <= em_gain <= 1e4):
        raise PixelregError(f"--em-gain must be 0 (no EM register) or 1 to 10000, got {em_gain:g}")
    for name, value in (("baseline", baseline), ("e-per-adu", e_per_adu)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise PixelregError(f"--{name} must be a finite number >= 0, got {value:g}")
    if e_per_adu is not None and e_per_adu <= 0:
        raise PixelregError(f"--e-per-adu must be above 0, got {e_per_adu:g}")
    figure = figure if figure is not None else out.with_suffix(".png")
    if figure.suffix.lower() != ".png":
        raise PixelregError(f"--figure is drawn as PNG; give a .png path, got {figure}")
    if Path(os.path.realpath(figure)) == Path(os.path.realpath(out)):
        raise PixelregError(f"--out and --figure both name {out}; give the spec a .json name (or --figure)")
    for target in (out, figure):
        refuse_overwriting(target, files, "--out" if target == out else "--figure")
        writable_target(target)
    for path in files:
        require_file(path, "image")
    pixels = read_calibration_frames(files, frames)
    result = estimate(pixels, baseline, e_per_adu, em_gain, say(quiet))
    for warning in result.warnings:
        sys.stderr.write(f"Warning: {warning}\n")
    existed = figure.exists()
    plot_calibration(result, figure)
    try:
        path = write_json(out, result.spec.to_dict())
    except BaseException:
        if not existed:  # the two go together: no figure of a spec that was not written
            figure.unlink(missing_ok=True)
        raise
    if not quiet:
        console.print(calibration_table(result))
    emit({"path": str(path), "figure": str(figure), **result.summary()} if as_json else str(path), as_json)
