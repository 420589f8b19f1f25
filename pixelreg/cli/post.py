"""After localization: `drift`, `merge`, `filter` and `resolution`, each a table in and a table
(or a measure) out. Each prints what it wrote on stdout, one path per line, so that a shell
script can chain them: predict | drift | merge | filter | plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pixelreg.cli.app import command, console, emit, say
from pixelreg.cli.options import (
    AsJson,
    Quiet,
    TableArg,
    TableFormat,
    TablePixelSize,
    check_pixel_size,
    parse_bounds,
    refuse_overwriting,
)
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM

OutTable = Annotated[
    Path | None,
    typer.Option("--out", help="The table to write; default: LOCS's name with {}.", show_default=False),
]


def _read(
    table: Path, out: Path | None, suffix: str, form: str | None, pixel_size: float
) -> tuple[Any, Path, str]:
    """The table LOCS, where to write the result, and its format."""
    from pixelreg.io.tables import chosen_format, read_table, table_format

    check_pixel_size(pixel_size)
    source = table_format(table)
    if out is None:
        out = table.with_name(f"{table.stem}_{suffix}{table.suffix}")
    form = chosen_format(out, form, source)
    refuse_overwriting(out, [table])
    return read_table(table, pixel_size), out, form


def _written(paths: list[Path], quiet: bool, message: str) -> None:
    say(quiet)(message)
    for path in paths:
        emit(str(path), False)


@command
def drift(
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The corrected table; default: LOCS's name with _undrifted. The drift trace goes "
            "beside it as NAME_drift.csv (frame, x and y in px and nm) and NAME_drift.png.",
            show_default=False,
        ),
    ] = None,
    segment: Annotated[
        int | None,
        typer.Option(
            help="Frames per segment of the cross-correlation; default: chosen from the data "
            "(about 1,000 localizations a segment, at most 30 segments).",
            show_default=False,
        ),
    ] = None,
    fiducials: Annotated[
        bool, typer.Option("--fiducials", help="Take the drift from fiducials: spots present in most frames.")
    ] = False,
    table_format: TableFormat = None,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    quiet: Quiet = False,
) -> None:
    """Estimate the stage's drift from the localizations and take it away: redundant
    cross-correlation of renderings of segments of frames (Wang et al. 2014), or the mean track
    of fiducials with --fiducials. The drift is relative to the first frame.

    Example: pixelreg drift locs.csv --out locs_undrifted.csv
    """
    from pixelreg.io.files import write_together
    from pixelreg.io.tables import table_writes
    from pixelreg.plots.post import drift_figure
    from pixelreg.plots.style import figure_write
    from pixelreg.post.drift import estimate_drift, fiducial_drift, undrift

    if fiducials and segment is not None:
        raise PixelregError("--segment is for the cross-correlation; --fiducials takes none")
    locs, out, form = _read(table, out, "undrifted", table_format, pixel_size)
    found = fiducial_drift(locs) if fiducials else estimate_drift(locs, segment)
    trace = out.with_name(f"{out.stem}_drift.csv")
    figure = out.with_name(f"{out.stem}_drift.png")
    writes = table_writes(out, undrift(locs, found), form, pixel_size)
    writes += [(trace, lambda tmp: _write_trace(tmp, found, pixel_size))]
    writes += [(figure, figure_write(drift_figure(found, pixel_size)))]
    write_together(writes)
    span = [float(v.max() - v.min()) * pixel_size for v in (found.x, found.y)]
    how = found.method if fiducials else f"RCC, {len(found.centres)} segments of {found.segment:,} frames"
    _written(
        [path for path, _ in writes],
        quiet,
        f"drift of {len(found.x):,} frames by {how}: peak to peak {span[0]:.1f} nm in x, "
        f"{span[1]:.1f} nm in y; {len(locs):,} localizations corrected, written to {out}",
    )


def _write_trace(path: Path, found: Any, pixel_size: float) -> None:
    import numpy as np

    frames = np.arange(len(found.x))
    rows = np.column_stack([frames, found.x, found.y, found.x * pixel_size, found.y * pixel_size])
    np.savetxt(
        path,
        rows,
        fmt=["%d", "%.5f", "%.5f", "%.3f", "%.3f"],
        delimiter=",",
        header="frame,x_px,y_px,x_nm,y_nm",
        comments="",
    )


@command
def merge(
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(help="The merged table; default: LOCS's name with _merged.", show_default=False),
    ] = None,
    radius: Annotated[
        float | None,
        typer.Option(
            help="px: a fixed radius within which a localization joins an event's mean; default: "
            "within 4 times their combined uncertainty (at most 10 median uncertainties).",
            show_default=False,
        ),
    ] = None,
    gap: Annotated[int, typer.Option(help="Dark frames an event may skip and go on.")] = 1,
    table_format: TableFormat = None,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    quiet: Quiet = False,
) -> None:
    """Merge the localizations of one molecule in consecutive frames (a blinking event) into one
    row: their inverse-variance weighted position, photons summed, uncertainty combined, the
    first frame, and columns n (localizations merged) and length (frames from first to last).
    Run it after drift: a drifting event would not stay within --radius.

    Example: pixelreg merge locs_undrifted.csv
    """
    from pixelreg.io.files import write_together
    from pixelreg.io.tables import table_writes
    from pixelreg.post.merge import merge_events

    locs, out, form = _read(table, out, "merged", table_format, pixel_size)
    merged = merge_events(locs, radius, gap)
    writes = table_writes(out, merged.table, form, pixel_size)
    write_together(writes)
    _written(
        [path for path, _ in writes],
        quiet,
        f"{len(locs):,} localizations merged into {len(merged.table):,} events ("
        + (
            f"within {merged.radius:.3f} px = {merged.radius * pixel_size:.1f} nm"
            if merged.fixed
            else f"within 4 combined uncertainties, at most {merged.radius * pixel_size:.1f} nm"
        )
        + f", {gap} dark frame(s) allowed), "
        f"written to {out}",
    )


Bounds = Annotated[str | None, typer.Option(show_default=False)]


@command
def filter(  # noqa: A001 - the command's name
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(help="The kept rows; default: LOCS's name with _filtered.", show_default=False),
    ] = None,
    photons: Annotated[
        str | None,
        typer.Option(help="Photons LO:HI (either side may be left out: 500:).", show_default=False),
    ] = None,
    uncertainty: Annotated[
        str | None,
        typer.Option(help="Uncertainty in px, LO:HI (:0.2 keeps 0.2 px or less).", show_default=False),
    ] = None,
    confidence: Annotated[
        str | None,
        typer.Option(help="Confidence LO:HI (0.5: keeps 0.5 and above... give 0.5:).", show_default=False),
    ] = None,
    frames: Annotated[
        str | None, typer.Option(help="Frames FIRST:LAST, 0-based, both kept.", show_default=False)
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="X0:X1,Y0:Y1 in px (pixel centres on integers): the rectangle kept.", show_default=False
        ),
    ] = None,
    table_format: TableFormat = None,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Keep the localizations within ranges of photons, uncertainty, confidence, frames and a
    region, and print how many each range dropped.

    Example: pixelreg filter locs_merged.csv --photons 500: --uncertainty :0.2
    """
    from pixelreg.cli.tables import fitted_table
    from pixelreg.io.files import write_together
    from pixelreg.io.tables import table_writes
    from pixelreg.post.filter import CRITERIA, filter_table

    ranges: dict[str, tuple[float, float]] = {}
    for name, text in (
        ("photons", photons),
        ("uncertainty", uncertainty),
        ("confidence", confidence),
        ("frame", frames),
    ):
        if text is not None:
            ranges[name] = parse_bounds(text, f"--{'frames' if name == 'frame' else name}")
    if region is not None:
        sides = region.split(",")
        if len(sides) != 2:
            raise PixelregError(f"--region takes X0:X1,Y0:Y1, got {region!r}")
        ranges["x"], ranges["y"] = (parse_bounds(side, "--region") for side in sides)
    if not ranges:
        raise PixelregError(
            "give a range to filter by: --photons, --uncertainty, --confidence, --frames or --region"
        )
    locs, out, form = _read(table, out, "filtered", table_format, pixel_size)
    result = filter_table(locs, ranges)
    writes = table_writes(out, result.table, form, pixel_size)
    write_together(writes)
    kept = len(result.table)
    if as_json:
        emit({"table": str(out), "rows": result.total, "kept": kept, "dropped": result.dropped}, True)
    rows = [
        [CRITERIA[name], f"{low:g}", f"{high:g}", f"{count:,}"]
        for name, count in result.dropped.items()
        for low, high in [ranges[name]]
    ]
    rows.append(["kept", "", "", f"{kept:,} of {result.total:,}"])
    if not quiet:
        console.print(fitted_table(f"filter {table.name}", ["range", "from", "to", "dropped"], rows, []))
    _written(
        [] if as_json else [path for path, _ in writes],
        quiet,
        f"{kept:,} of {result.total:,} localizations kept, written to {out}",
    )


@command
def resolution(
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The figure (FRC curve, NeNA fit); default: LOCS's name with _resolution.png.",
            show_default=False,
        ),
    ] = None,
    bin_nm: Annotated[
        float | None,
        typer.Option(
            "--bin",
            help="nm: the FRC renderings' bin; default: half the median uncertainty.",
            show_default=False,
        ),
    ] = None,
    block: Annotated[
        int | None,
        typer.Option(
            help="Frames per block: the halves are alternate blocks; default: 20 blocks in all.",
            show_default=False,
        ),
    ] = None,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Measure a table's resolution: the Fourier ring correlation of two halves of the
    localizations at the 1/7 threshold (Nieuwenhuizen et al. 2013), and the localization
    precision from nearest neighbours in adjacent frames (NeNA; Endesfelder et al. 2014; on a
    table before merge).

    Example: pixelreg resolution locs_undrifted.csv
    """
    from pixelreg.io.files import write_together
    from pixelreg.io.tables import read_table
    from pixelreg.plots.post import resolution_figure
    from pixelreg.plots.style import figure_write
    from pixelreg.post.resolution import nena, ring_correlation

    check_pixel_size(pixel_size)
    figure = out if out is not None else table.with_name(f"{table.stem}_resolution.png")
    if figure.suffix.lower() != ".png":
        raise PixelregError(f"--out {figure}: the figure is a PNG; give a .png file")
    refuse_overwriting(figure, [table])
    locs = read_table(table, pixel_size)
    frc = ring_correlation(locs, pixel_size, bin_nm, block)
    try:
        precision = nena(locs, pixel_size)
    except PixelregError as exc:
        precision = None
        say(quiet)(f"NeNA: {exc}")
    write_together([(figure, figure_write(resolution_figure(frc, precision, table.name)))])
    result = {
        "table": str(table),
        "localizations": len(locs),
        "frc_resolution_nm": frc.resolution_nm,
        "frc_bin_nm": frc.bin_nm,
        "frc_block_frames": frc.block,
        "nena_nm": None if precision is None else precision.precision_nm,
        "figure": str(figure),
    }
    if as_json:
        emit(result, True)
        return
    shown = (
        "not reached (the curve stays above 1/7)"
        if frc.resolution_nm is None
        else f"{frc.resolution_nm:.1f} nm"
    )
    say(quiet)(
        f"FRC resolution {shown}; NeNA precision "
        f"{'-' if precision is None else f'{precision.precision_nm:.2f} nm'} ({len(locs):,} localizations)"
    )
    emit(str(figure), False)
