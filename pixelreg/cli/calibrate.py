"""`pixelreg calibrate`: a movie's camera, PSF, photons and density, written as a spec to train on."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pixelreg.cli.app import command, console, emit, say
from pixelreg.cli.options import AsJson, Quiet, refuse_overwriting
from pixelreg.cli.tables import calibration_table, twin_table
from pixelreg.errors import PixelregError
from pixelreg.fit.defaults import CALIBRATION_FRAMES, CALIBRATION_SIDE, MOST_BEAD_PLANES, PSF_MODELS
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
    beads: Annotated[
        Path | None,
        typer.Option(
            help="A z-stack of sparse beads (TIFF or .npy, one plane a step) to measure the PSF from.",
            show_default=False,
        ),
    ] = None,
    z_step: Annotated[float, typer.Option(help="With --beads: nm the stage moved between planes.")] = 0.0,
    psf: Annotated[
        str,
        typer.Option(
            help="Without --beads, the PSF to train on: auto (measured from the movie's bright isolated "
            "spots where a Gaussian does not fit them within their noise), measured, or gaussian."
        ),
    ] = "auto",
    psf_out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write a measured PSF (.npz); default: psf.npz beside --out.", show_default=False
        ),
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
    if psf not in PSF_MODELS:
        raise PixelregError(f"--psf must be one of {', '.join(PSF_MODELS)}, got {psf!r}")
    if beads is not None and not (z_step > 0 and math.isfinite(z_step)):
        raise PixelregError(f"--beads needs --z-step, the nm between planes (above 0), got {z_step:g}")
    if beads is None and z_step != 0:
        raise PixelregError("--z-step is the bead stack's; give --beads too")
    psf_out = psf_out if psf_out is not None else out.with_name("psf.npz")
    if psf_out.suffix.lower() != ".npz":
        raise PixelregError(f"--psf-out is written as .npz; give a .npz path, got {psf_out}")
    check_camera_values(baseline=baseline, e_per_adu=e_per_adu, em_gain=em_gain)
    figure = figure if figure is not None else out.with_suffix(".png")
    if figure.suffix.lower() != ".png":
        raise PixelregError(f"--figure is drawn as PNG; give a .png path, got {figure}")
    if Path(os.path.realpath(figure)) == Path(os.path.realpath(out)):
        raise PixelregError(f"--out and --figure both name {out}; give the spec a .json name (or --figure)")
    psf_figure = psf_out.with_suffix(".png")
    named = (out, figure, psf_out, psf_figure)
    if len({Path(os.path.realpath(p)) for p in named}) < len(named):
        raise PixelregError(
            f"--out, --figure, --psf-out and its figure must be four files; got {', '.join(map(str, named))}"
        )
    inputs = [*files, *([beads] if beads is not None else [])]
    for target, flag in (
        (out, "--out"),
        (figure, "--figure"),
        (psf_out, "--psf-out"),
        (psf_figure, "--psf-out"),
    ):
        refuse_overwriting(target, inputs, flag)
    # Every option, output and file header is checked before torch is imported
    pixels = read_first_frames(files, frames, CALIBRATION_SIDE)
    stack = read_first_frames([beads], MOST_BEAD_PLANES, CALIBRATION_SIDE) if beads is not None else None

    from pixelreg.fit.calibrate import calibrate as estimate
    from pixelreg.plots.calibration import plot_calibration

    result = estimate(pixels, baseline, e_per_adu, em_gain, say(quiet), stack, z_step, psf)
    for warning in result.warnings:
        sys.stderr.write(f"Warning: {warning}\n")
    if result.twin is not None and not (quiet and result.twin.agrees):
        console.print(twin_table(result.twin))
    result.require_twin()
    psf_name = os.path.relpath(os.path.realpath(psf_out), os.path.realpath(out.parent))
    summary = result.summary(psf_name)
    spec = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    writes = [
        (figure, lambda tmp: plot_calibration(result, tmp)),
        (out, lambda tmp: tmp.write_text(spec, encoding="utf-8")),
    ]
    measured = result.psf
    if measured is not None:
        from pixelreg.plots.psf import plot_psf

        writes.append((psf_out, lambda tmp: measured.save(tmp)))
        writes.append((psf_figure, lambda tmp: plot_psf(measured, tmp)))
    write_together(writes)
    if not quiet:
        console.print(calibration_table(result))
    written = {
        "path": str(out),
        "figure": str(figure),
        "psf_file": str(psf_out) if measured is not None else None,
    }
    emit({**written, **summary} if as_json else str(out), as_json)
