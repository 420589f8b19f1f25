"""After localization: `drift`, `merge`, `filter` and `resolution`, each a table in and a table
(or a measure) out. Each prints what it wrote on stdout, one path per line (or JSON with
--json), so that a shell script can chain them: predict | drift | merge | filter | plot."""

from __future__ import annotations

from dataclasses import dataclass
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
    given_on_command_line,
    parse_bounds,
    refuse_overwriting,
)
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM
from pixelreg.post.merge import DEFAULT_GAP, MOST_RADIUS, SIGMAS
from pixelreg.post.tracking import SPLIT


@dataclass
class Source:
    """A table read: its rows, its file, its format and the pixel size (nm) to use with it."""

    locs: Any
    path: Path
    form: str
    pixel_size: float

    def inputs(self) -> list[Path]:
        """The files the table came from: it, and a Picasso table's YAML beside it."""
        if self.form != "picasso":
            return [self.path]
        from pixelreg.io.picasso import yaml_path

        return [self.path, yaml_path(self.path)]


def read_source(ctx: typer.Context, table: Path, pixel_size: float) -> Source:
    """LOCS read, at --pixel-size; a Picasso table's own pixel size (its YAML's `Pixelsize`)
    where --pixel-size is not given."""
    from pixelreg.io.picasso import read_info
    from pixelreg.io.tables import read_table, table_format

    check_pixel_size(pixel_size)
    form = table_format(table)
    if form == "picasso" and not given_on_command_line(ctx, "pixel_size"):
        pixel_size = picasso_pixel_size(read_info(table).get("Pixelsize"), pixel_size)
    return Source(read_table(table, pixel_size), table, form, pixel_size)


def picasso_pixel_size(value: Any, default: float) -> float:
    """A Picasso YAML's `Pixelsize` where it is a usable number of nm, else `default`."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return default
    check_pixel_size(size)
    return size


def table_outputs(
    source: Source, out: Path | None, suffix: str, form: str | None, beside: tuple[str, ...] = ()
) -> tuple[Path, str, list[Path]]:
    """Where to write the result table (--out, default LOCS's name with _`suffix`), its format,
    and every file the command will write (a Picasso table's YAML, and `beside` the table: its
    name with each of these endings), none of them one of the command's inputs."""
    from pixelreg.io.picasso import yaml_path
    from pixelreg.io.tables import chosen_format

    if out is None:
        out = source.path.with_name(f"{source.path.stem}_{suffix}{source.path.suffix}")
    form = chosen_format(out, form, source.form)
    paths = [out, *([yaml_path(out)] if form == "picasso" else [])]
    paths += [out.with_name(out.stem + ending) for ending in beside]
    for path in paths:
        refuse_overwriting(path, source.inputs(), "--out" if path == out else f"--out (its {path.name})")
    return out, form, paths


def _written(paths: list[Path], quiet: bool, as_json: bool, message: str, result: dict[str, Any]) -> None:
    say(quiet)(message)
    if as_json:
        emit({**result, "written": [str(path) for path in paths]}, True)
        return
    for path in paths:
        emit(str(path), False)


@command
def drift(
    ctx: typer.Context,
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
    as_json: AsJson = False,
) -> None:
    """Estimate the stage's drift from the localizations and take it away: redundant
    cross-correlation of renderings of segments of frames (Wang et al. 2014), or the mean track
    of fiducials with --fiducials. The drift is zero at the start of the movie.

    Example: pixelreg drift locs.csv --out locs_undrifted.csv
    """
    from pixelreg.io.files import write_together
    from pixelreg.io.tables import table_writes
    from pixelreg.plots.post import drift_figure
    from pixelreg.plots.style import figure_write
    from pixelreg.post.drift import estimate_drift, fiducial_drift, undrift

    if fiducials and segment is not None:
        raise PixelregError("--segment is for the cross-correlation; --fiducials takes none")
    source = read_source(ctx, table, pixel_size)
    out, form, paths = table_outputs(source, out, "undrifted", table_format, ("_drift.csv", "_drift.png"))
    locs, pixel_size = source.locs, source.pixel_size
    found = fiducial_drift(locs) if fiducials else estimate_drift(locs, segment)
    trace, figure = paths[-2:]
    writes = table_writes(out, undrift(locs, found), form, pixel_size)
    writes += [(trace, lambda tmp: _write_trace(tmp, found, pixel_size))]
    writes += [(figure, figure_write(drift_figure(found, pixel_size)))]
    write_together(writes)
    span = [float(v.max() - v.min()) * pixel_size for v in (found.x, found.y)]
    how = found.method if fiducials else f"RCC, {len(found.centres)} segments of {found.segment:,} frames"
    _written(
        paths,
        quiet,
        as_json,
        f"drift of {len(found.x):,} frames by {how}: peak to peak {span[0]:.1f} nm in x, "
        f"{span[1]:.1f} nm in y; {len(locs):,} localizations corrected, written to {out}",
        {"method": found.method, "segment_frames": found.segment or None, "peak_to_peak_nm": span},
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
    ctx: typer.Context,
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(help="The merged table; default: LOCS's name with _merged.", show_default=False),
    ] = None,
    radius: Annotated[
        float | None,
        typer.Option(
            help="px: a fixed radius within which a localization joins an event's mean; default: "
            f"within {SIGMAS:g} times their combined uncertainty (at most {MOST_RADIUS:g} median "
            "uncertainties).",
            show_default=False,
        ),
    ] = None,
    gap: Annotated[int, typer.Option(help="Dark frames an event may skip and go on.")] = DEFAULT_GAP,
    table_format: TableFormat = None,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    quiet: Quiet = False,
    as_json: AsJson = False,
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

    source = read_source(ctx, table, pixel_size)
    out, form, paths = table_outputs(source, out, "merged", table_format)
    locs, pixel_size = source.locs, source.pixel_size
    merged = merge_events(locs, radius, gap)
    write_together(table_writes(out, merged.table, form, pixel_size))
    _written(
        paths,
        quiet,
        as_json,
        f"{len(locs):,} localizations merged into {len(merged.table):,} events ("
        + (
            f"within {merged.radius:.3f} px = {merged.radius * pixel_size:.1f} nm"
            if merged.fixed
            else f"within {SIGMAS:g} combined uncertainties, at most {merged.radius * pixel_size:.1f} nm"
        )
        + f", {gap} dark frame(s) allowed), "
        f"written to {out}",
        {"localizations": len(locs), "events": len(merged.table), "radius_px": merged.radius, "gap": gap},
    )


@command
def filter(  # noqa: A001 - the command's name
    ctx: typer.Context,
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(help="The kept rows; default: LOCS's name with _filtered.", show_default=False),
    ] = None,
    photons: Annotated[
        str | None,
        typer.Option(
            help="Photons LO:HI, both kept; either side may be left out (500: keeps 500 and more); "
            "a single number keeps exactly it.",
            show_default=False,
        ),
    ] = None,
    uncertainty: Annotated[
        str | None,
        typer.Option(help="Uncertainty in px, LO:HI (:0.2 keeps 0.2 px or less).", show_default=False),
    ] = None,
    confidence: Annotated[
        str | None,
        typer.Option(help="Confidence LO:HI (0.5: keeps 0.5 and above).", show_default=False),
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
    source = read_source(ctx, table, pixel_size)
    out, form, paths = table_outputs(source, out, "filtered", table_format)
    result = filter_table(source.locs, ranges)
    write_together(table_writes(out, result.table, form, source.pixel_size))
    kept = len(result.table)
    rows = [
        [CRITERIA[name], f"{low:g}", f"{high:g}", f"{count:,}"]
        for name, count in result.dropped.items()
        for low, high in [ranges[name]]
    ]
    rows.append(["kept", "", "", f"{kept:,} of {result.total:,}"])
    if not quiet:
        console.print(fitted_table(f"filter {table.name}", ["range", "from", "to", "dropped"], rows, []))
    _written(
        paths,
        quiet,
        as_json,
        f"{kept:,} of {result.total:,} localizations kept, written to {out}",
        {"rows": result.total, "kept": kept, "dropped": result.dropped},
    )


@command
def resolution(
    ctx: typer.Context,
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
    from pixelreg.plots.post import resolution_figure
    from pixelreg.plots.style import figure_write
    from pixelreg.post.resolution import nena, ring_correlation

    figure = out if out is not None else table.with_name(f"{table.stem}_resolution.png")
    if figure.suffix.lower() != ".png":
        raise PixelregError(f"--out {figure}: the figure is a PNG; give a .png file")
    source = read_source(ctx, table, pixel_size)
    refuse_overwriting(figure, source.inputs())
    locs, pixel_size = source.locs, source.pixel_size
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
        "pixel_size_nm": pixel_size,
        "nena_nm": None if precision is None else precision.precision_nm,
        "figure": str(figure),
    }
    if as_json:
        emit(result, True)
        return
    shown = (
        "not found (the curve never falls through 1/7: halves that never correlate, or that "
        "correlate up to the finest bin)"
        if frc.resolution_nm is None
        else f"{frc.resolution_nm:.1f} nm"
    )
    say(quiet)(
        f"FRC resolution {shown}; NeNA precision "
        f"{'-' if precision is None else f'{precision.precision_nm:.2f} nm'} ({len(locs):,} localizations)"
    )
    emit(str(figure), False)


@command
def track(
    ctx: typer.Context,
    table: TableArg,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The tracks table (CSV: frame, x, y, particle, then the other columns, as trackpy's "
            "functions read it); default: LOCS's name with _tracks.csv. NAME.json (motion) and "
            "NAME.png (tracks, MSD, D) go beside it.",
            show_default=False,
        ),
    ] = None,
    search_range: Annotated[
        float, typer.Option(help="px: the farthest a particle moves from one frame to the next.")
    ] = 5.0,
    memory: Annotated[int, typer.Option(help="Frames a particle may be missed and its track go on.")] = 1,
    split: Annotated[
        float,
        typer.Option(
            help="Cut a track at each step longer than this many of its own RMS steps (a swap where "
            "particles meet; chance exp(-split²) per Brownian step); 0 keeps every link trackpy made."
        ),
    ] = SPLIT,
    frame_time: Annotated[
        float | None,
        typer.Option(
            help="Seconds between frames: D in µm²/s (with --pixel-size) rather than px²/frame.",
            show_default=False,
        ),
    ] = None,
    movie: Annotated[
        Path | None,
        typer.Option(help="The movie: its first frame drawn under the tracks.", show_default=False),
    ] = None,
    pixel_size: TablePixelSize = PIXEL_SIZE_NM,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Link localizations into trajectories with trackpy's linker, and measure how the particles
    move: each track's and all tracks' mean squared displacement, and D with Michalet's
    localization-error offset.

    Example: pixelreg track locs.csv --search-range 4 --memory 1 --frame-time 0.05
    """
    import json

    import numpy as np

    from pixelreg.io.files import write_together
    from pixelreg.io.tables import tracks_writes
    from pixelreg.plots.post import tracks_figure
    from pixelreg.plots.style import figure_write
    from pixelreg.post.motion import Units, motion
    from pixelreg.post.tracking import link_tracks

    if frame_time is not None and not (np.isfinite(frame_time) and frame_time > 0):
        raise PixelregError(f"--frame-time must be above 0 s, got {frame_time:g}")
    source = read_source(ctx, table, pixel_size)
    out = out if out is not None else table.with_name(f"{table.stem}_tracks.csv")
    if out.suffix.lower() != ".csv":
        raise PixelregError(f"--out {out}: the tracks table is a CSV; give a .csv file")
    paths = [out, out.with_suffix(".json"), out.with_suffix(".png")]
    for path in paths:
        refuse_overwriting(path, [*source.inputs(), *([movie] if movie else [])])
    first = None
    if movie is not None:
        from pixelreg.io.frames import open_frames

        try:  # a camera's counts, else grey levels: only drawn
            frames = open_frames(movie, counts=True)
        except PixelregError:
            frames = open_frames(movie)
        first = next(frames.chunks())[1][0]
    linked, cuts = link_tracks(source.locs, search_range, memory, split)
    moved = motion(linked)
    units = Units.of(source.pixel_size, frame_time)
    result = {
        "tracks": len(moved.track),
        "localizations": len(linked),
        "search_range_px": search_range,
        "memory_frames": memory,
        "split": split,
        "steps_cut": cuts,
        "diffusion_unit": units.diffusion_name,
        "ensemble_diffusion": _finite(moved.ensemble_diffusion * units.diffusion),
        "ensemble_sigma_nm": _finite(moved.ensemble_sigma * source.pixel_size),
        "msd_unit": units.area_name,
        "msd": [_finite(v * units.area) for v in moved.msd],
        "per_track": [
            {
                "track": int(t),
                "localizations": int(n),
                "diffusion": _finite(d * units.diffusion),
            }
            for t, n, d in zip(moved.track, moved.count, moved.diffusion, strict=True)
        ],
    }
    write_together(
        tracks_writes(out, linked)
        + [
            (paths[1], lambda tmp: tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")),
            (paths[2], figure_write(tracks_figure(linked, moved, units, first))),
        ]
    )
    lengths = moved.count
    _written(
        paths,
        quiet,
        as_json,
        f"{len(linked):,} localizations linked into {len(moved.track):,} tracks (median length "
        f"{int(np.median(lengths))} frames, --search-range {search_range:g} px, --memory {memory}, "
        f"{cuts:,} improbable steps cut); "
        f"ensemble D = {moved.ensemble_diffusion * units.diffusion:.4g} {units.diffusion_name}, "
        f"localization error {moved.ensemble_sigma * source.pixel_size:.1f} nm; written to {out}",
        {key: value for key, value in result.items() if key != "per_track"},
    )


def _finite(value: float) -> float | None:
    """A number for JSON: None where it is not finite."""
    import math

    return float(value) if math.isfinite(value) else None
