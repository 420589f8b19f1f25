"""`pixelreg bench`: a group of benches, each a subcommand with only its own options.

Each bench trains and scores in a new (or empty) --out folder, writes its JSON there (and a
figure, where it draws one), prints its table on stderr and the JSON's path (or the JSON) on
stdout. A bench that does not finish leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pixelreg.bench.common import require_empty_folder, write_results
from pixelreg.bench.defaults import (
    BENCH_EPOCHS,
    BENCH_HOLDOUTS,
    CALIBRATION_EPOCHS,
    DENSITY_CONDITIONS,
    DENSITY_EPOCHS,
    DENSITY_N,
    DENSITY_RANGES,
    DENSITY_SIZE,
    DENSITY_TRAINING_MOST,
    MOVIE_EPOCHS,
    MOVIE_FRAMES,
    MOVIE_SIZE,
    MOVIE_SPOTS,
    PRECISION_BLURS,
    PRECISION_BRIGHTNESSES,
    PRECISION_EPOCHS,
    PRECISION_MODELS,
    PRECISION_N,
)
from pixelreg.cli.app import OneLineErrors, console, emit, guarded, say
from pixelreg.cli.options import (
    AsJson,
    BenchOut,
    Device,
    Quiet,
    comma_list,
    make_spec,
    number_list,
    numbers,
    with_data_options,
)
from pixelreg.cli.progress import ConsoleReporter
from pixelreg.cli.tables import (
    bench_table,
    calibration_bench_table,
    density_table,
    depth_tables,
    movie_table,
    perf_table,
    post_tables,
    precision_table,
    psf_bench_table,
    psf_isolated_table,
    track_table,
)
from pixelreg.errors import PixelregError
from pixelreg.fit.defaults import MIN_BOUND_BLUR
from pixelreg.io.files import require_file, require_writable_place
from pixelreg.io.runs import resolve_checkpoint
from pixelreg.nn.config import MODEL_NAMES, TrainConfig
from pixelreg.simulate.spec import HOLDOUTS

bench_app = typer.Typer(
    cls=OneLineErrors,
    help="Measure pixelreg against argmax, classical fits, peers and the Cramér-Rao bound.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
Epochs = Annotated[int, typer.Option(help="Epochs for every model, the same budget for all.")]


def bench_command(
    help: str | None = None, name: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as a bench subcommand, guarded; `help` where its docstring cannot
    say it (text made of the bench's settings), else the docstring; `name` where the function's
    cannot be the command's."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        return bench_app.command(name, help=help)(guarded(function))

    return register


def reporter_for(quiet: bool) -> Callable[[str], ConsoleReporter]:
    """A bench's training runs: a bold label each, their epochs silent."""

    def start(label: str) -> ConsoleReporter:
        if not quiet:
            console.print(f"[bold]{label}[/bold]")
        return ConsoleReporter(quiet=True)

    return start


def finish(path: Path, results: dict[str, Any], tables: list[Table], quiet: bool, as_json: bool) -> None:
    """Print a bench's tables on stderr and its JSON's path (or the JSON) on stdout."""
    if not quiet:
        for table in tables:
            console.print(table)
    emit({"path": str(path), **results} if as_json else str(path), as_json)


def check_models(names: tuple[str, ...], epochs: int, device: str) -> None:
    """Refuse, before any work, a model, budget or device that could not train."""
    for name in names:
        TrainConfig(model=name, epochs=epochs, device=device).validate()


@bench_command()
@with_data_options(only=("n", "size", "seed"))
def holdouts(
    out: BenchOut = Path("runs/holdouts"),
    epochs: Epochs = BENCH_EPOCHS,
    models: Annotated[str, typer.Option(help="Comma-separated models to compare.")] = ",".join(MODEL_NAMES),
    holdouts: Annotated[str, typer.Option(help="Comma-separated holdouts to run.")] = ",".join(
        BENCH_HOLDOUTS
    ),
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """Every model trained and evaluated on the same data and budget, beside argmax, on each
    holdout; writes bench.json.

    Example: pixelreg bench holdouts --models heatmap,cnn --epochs 10
    """
    model_names = comma_list(models, "--models")
    check_models(model_names, epochs, device)
    holdout_names = comma_list(holdouts, "--holdouts")
    for name in holdout_names:
        if name not in HOLDOUTS:
            raise PixelregError(f"--holdouts takes {', '.join(HOLDOUTS)}; got {name!r}")
    spec = make_spec(spec_options)
    require_empty_folder(out)
    from pixelreg.bench.holdouts import run_holdouts

    def run() -> dict[str, Any]:
        return run_holdouts(out, spec, epochs, model_names, holdout_names, device, reporter_for(quiet))

    path, results = write_results(out, "bench.json", run)
    finish(path, results, [bench_table(results["rows"])], quiet, as_json)


@bench_command()
@with_data_options(only=("n", "size", "seed"), defaults={"n": PRECISION_N})
def precision(
    out: BenchOut = Path("runs/precision"),
    epochs: Epochs = PRECISION_EPOCHS,
    models: Annotated[str, typer.Option(help="Comma-separated models to compare.")] = ",".join(
        PRECISION_MODELS
    ),
    blurs: Annotated[str, typer.Option(help="Comma-separated blurs (PSF sigma, px).")] = numbers(
        PRECISION_BLURS
    ),
    brightnesses: Annotated[
        str, typer.Option(help="Comma-separated spot brightnesses (grey levels summed).")
    ] = numbers(PRECISION_BRIGHTNESSES),
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """The precision grid: sub-pixel spots in noise 10 over background 50, at each blur and
    brightness; every model and classical method against the Cramér-Rao bound, with its pixel
    locking (bias_px). --n is per cell. Writes precision.json and precision.png.

    Example: pixelreg bench precision --blurs 1 --brightnesses 500 --n 2000 --epochs 5
    """
    model_names = comma_list(models, "--models")
    check_models(model_names, epochs, device)
    blur_values = number_list(blurs, "--blurs", least=MIN_BOUND_BLUR)
    brightness_values = number_list(brightnesses, "--brightnesses", least=0.0, above=True)
    spec = make_spec(spec_options)
    require_empty_folder(out)
    from pixelreg.bench.precision import run_precision
    from pixelreg.plots.precision import plot_precision_grid

    def run() -> dict[str, Any]:
        results = run_precision(
            out, spec, epochs, model_names, device, blur_values, brightness_values, reporter_for(quiet)
        )
        plot_precision_grid(results, out / "precision.png")
        return results

    path, results = write_results(out, "precision.json", run)
    finish(path, results, [precision_table(results)], quiet, as_json)


DENSITY_CONDITIONS_TEXT = ", ".join(f"{k} {v:g}" for k, v in DENSITY_CONDITIONS.items() if k != "subpixel")
DENSITY_HELP = f"""The counting model against the classical detectors (and trackpy, where installed) from
    sparse to dense images ({DENSITY_CONDITIONS_TEXT}); Jaccard index and efficiency. --n is per
    density. Each density's model trains on LO to at least {DENSITY_TRAINING_MOST} spots per 64x64
    pixels, where close pairs are common enough to learn from. Writes density.json and density.png.

    Example: pixelreg bench density --densities 0:10 --n 2000 --epochs 5
    """


@bench_command(DENSITY_HELP)
@with_data_options(only=("n", "size", "seed"), defaults={"n": DENSITY_N, "size": str(DENSITY_SIZE)})
def density(
    out: BenchOut = Path("runs/density"),
    epochs: Epochs = DENSITY_EPOCHS,
    densities: Annotated[
        str, typer.Option(help="Comma-separated ranges LO:HI of spots per image.")
    ] = ",".join(DENSITY_RANGES),
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """The counting model against the classical detectors, sparse to dense (DENSITY_HELP)."""
    check_models(("offsets",), epochs, device)
    ranges = comma_list(densities, "--densities")
    from pixelreg.bench.density import density_spec, run_density
    from pixelreg.plots.detections import plot_density

    spec = make_spec(spec_options)
    for counts in ranges:
        density_spec(spec, counts)  # a bad range: refused before any work
    require_empty_folder(out)

    def run() -> dict[str, Any]:
        results = run_density(out, spec, epochs, device, ranges, reporter_for(quiet))
        plot_density(results, out / "density.png")
        return results

    path, results = write_results(out, "density.json", run)
    finish(path, results, [density_table(results)], quiet, as_json)


MovieEpochs = Annotated[
    int | None,
    typer.Option(help=f"Epochs of the movie's model [default: {MOVIE_EPOCHS}].", show_default=False),
]
MovieCheckpoint = Annotated[
    Path | None,
    typer.Option(
        help="Time this counting model of camera images instead of training one.", show_default=False
    ),
]


MOVIE_HELP = f"""Time `predict` on a 16-bit TIFF of {MOVIE_FRAMES} frames of {MOVIE_SIZE}x{MOVIE_SIZE} with about
    {MOVIE_SPOTS} spots each (an sCMOS-like camera), localized by a model trained for it and by
    trackpy.locate where installed: frames/s, Mpx/s, Jaccard index and rmse of each. Writes movie.json.

    Example: pixelreg bench movie --out runs/movie-bench
    """


@bench_command(MOVIE_HELP)
def movie(
    out: BenchOut = Path("runs/movie"),
    epochs: MovieEpochs = None,
    checkpoint: MovieCheckpoint = None,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """`predict`'s speed and scores on a camera movie, against trackpy (MOVIE_HELP)."""
    if checkpoint is not None:
        if epochs is not None:
            raise PixelregError("--epochs trains the movie's model; with --checkpoint none is trained")
        checkpoint = require_file(resolve_checkpoint(checkpoint), "checkpoint")
    require_empty_folder(out, "movie.json")
    epochs = epochs if epochs is not None else MOVIE_EPOCHS
    check_models(("offsets",), epochs, device)
    from pixelreg.bench.movie import run_movie

    def run() -> dict[str, Any]:
        reporter = ConsoleReporter(quiet=True)
        return run_movie(out, epochs, device, checkpoint=checkpoint, reporter=reporter, say=say(quiet))

    path, results = write_results(out, "movie.json", run)
    finish(path, results, [movie_table(results)], quiet, as_json)


@bench_command()
def calibration(
    out: BenchOut = Path("runs/calibration"),
    epochs: Epochs = CALIBRATION_EPOCHS,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """The real-data workflow on movies of two other renderers (blinking spots on an EMCCD, a
    star field on an sCMOS): calibrate, train on the estimates and localize, against a model
    trained on the true parameters, and trackpy.locate and photutils' DAOStarFinder where
    installed. Writes calibration.json.

    Example: pixelreg bench calibration --epochs 15
    """
    require_empty_folder(out, "calibration.json")
    check_models(("offsets",), epochs, device)
    from pixelreg.bench.calibration import run_calibration_bench

    def run() -> dict[str, Any]:
        return run_calibration_bench(out, epochs, device, ConsoleReporter(quiet=True), say(quiet))

    path, results = write_results(out, "calibration.json", run)
    tables = [calibration_bench_table(name, result) for name, result in results.items()]
    finish(path, results, tables, quiet, as_json)


@bench_command()
def psf(
    out: BenchOut = Path("runs/psf"),
    epochs: Epochs = CALIBRATION_EPOCHS,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """The real-data workflow on a movie whose PSF is a high-NA objective's, not a Gaussian:
    calibrate with a Gaussian, with the PSF measured from the movie, and with one measured from
    beads; train on each and localize, beside trackpy.locate and DAOStarFinder where installed and
    an ML fit of the bead PSF; each model's phase bias. Writes psf.json and bias.png.

    Example: pixelreg bench psf --epochs 15
    """
    require_empty_folder(out, "psf.json")
    check_models(("offsets",), epochs, device)
    from pixelreg.bench.psf import run_psf_bench

    def run() -> dict[str, Any]:
        return run_psf_bench(out, epochs, device, ConsoleReporter(quiet=True), say(quiet))

    path, results = write_results(out, "psf.json", run)
    from pixelreg.plots.psf import plot_phase_bias

    plot_phase_bias(results["phase_bias"], out / "bias.png")
    finish(path, results, [psf_bench_table(results), psf_isolated_table(results)], quiet, as_json)


@bench_command(name="3d")
def three_d(
    out: BenchOut = Path("runs/3d"),
    epochs: Epochs = CALIBRATION_EPOCHS,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Depth from an astigmatic PSF, scored as the SMLM challenge scores 3D: a pupil PSF through a
    cylindrical lens, calibrated from a bead z-stack; a 3D model beside the Poisson ML fit of the
    bead PSF with z free, on the isolated spots of a sparse movie (rmse against the 3D bound by
    100 nm of depth) and on a dense one (2 emitters per square micrometre). Writes 3d.json and
    depth.png.

    Example: pixelreg bench 3d --epochs 15
    """
    require_empty_folder(out, "3d.json")
    check_models(("offsets",), epochs, device)
    from pixelreg.bench.depth import run_depth_bench

    def run() -> dict[str, Any]:
        return run_depth_bench(out, epochs, device, ConsoleReporter(quiet=True), say(quiet))

    path, results = write_results(out, "3d.json", run)
    from pixelreg.plots.depth import plot_depth_precision

    plot_depth_precision(results["by_depth"], out / "depth.png")
    finish(path, results, depth_tables(results), quiet, as_json)


@bench_command()
def post(
    out: BenchOut = Path("runs/post"),
    movie: Annotated[
        bool,
        typer.Option(
            "--movie",
            help="Also run the chain from a movie: render the first experiment through a pupil PSF, "
            "calibrate, train (--epochs; minutes), predict, then drift, merge and resolution.",
        ),
    ] = False,
    epochs: Epochs = CALIBRATION_EPOCHS,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Drift, merge and resolution on simulated experiments with a known truth: blinking molecules
    on filaments, 3,000 and 5,000 frames, a slow drift of 80 and 100 nm. Residual drift after
    `drift` beside RCC at Picasso's settings; merged rows against the true blinking events and
    their rmse against the combined bound; FRC of raw, corrected and truly corrected tables; NeNA
    against the true precision. With --movie, the chain from a movie through a trained model
    too. Writes post.json, drift.png, frc.png and render.png.

    Example: pixelreg bench post --movie
    """
    require_empty_folder(out, "post.json")
    from pixelreg.bench.post import run_post_bench

    drawn: dict[str, Any] = {}

    if movie:
        check_models(("offsets",), epochs, device)

    def run() -> dict[str, Any]:
        results, figures = run_post_bench(say(quiet))
        drawn.update(figures)
        if movie:
            from pixelreg.bench.post import run_movie_stage

            results["movie"], figures = run_movie_stage(
                out, epochs, device, ConsoleReporter(quiet=True), say(quiet)
            )
            drawn["movie"] = figures
        return results

    path, results = write_results(out, "post.json", run)
    from pixelreg.plots.post import before_after_figure, drift_figure, frc_comparison_figure
    from pixelreg.plots.style import _save

    first = drawn["filaments"]
    _save(drift_figure(first["drift"], 100.0, first["experiment"].drift), out / "drift.png")
    curves = {name if name != "movie" else "movie through the model": d["frc"] for name, d in drawn.items()}
    _save(frc_comparison_figure(curves), out / "frc.png")
    _save(before_after_figure(first["tables"], (20.0, 36.0, 14.0, 28.0)), out / "render.png")
    finish(path, results, post_tables(results), quiet, as_json)


@bench_command(name="track")
def track_bench(
    out: BenchOut = Path("runs/track"),
    epochs: Epochs = CALIBRATION_EPOCHS,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Trajectories from two particle-tracking movies, sparse and dense (two populations of
    Brownian particles, D ten times apart, entering, leaving and blinking, on an uneven
    background): trackpy.locate + trackpy.link against calibrate + train + predict + `track`,
    each tuned at its best; correct links, tracks and each population's D against the true
    trajectories'. Writes track.json.

    Example: pixelreg bench track --epochs 10
    """
    require_empty_folder(out, "track.json")
    check_models(("offsets",), epochs, device)
    from pixelreg.bench.tracks import run_track_bench

    def run() -> dict[str, Any]:
        return run_track_bench(out, epochs, device, ConsoleReporter(quiet=True), say(quiet))

    path, results = write_results(out, "track.json", run)
    finish(path, results, [track_table(results)], quiet, as_json)


@bench_command()
def perf(
    out: BenchOut = Path("runs/perf"),
    rss_n: Annotated[
        int, typer.Option(help="Images of the training run whose peak memory is measured.")
    ] = 1_000_000,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Images per second of generation, training and inference for every model beside numpy
    argmax, peak memory of a large training run, and the time the default `train` takes to be
    exact on unseen positions; writes perf.json.

    Example: pixelreg bench perf --rss-n 100000
    """
    if rss_n < 10:
        raise PixelregError(f"--rss-n must be at least 10, got {rss_n}")
    require_writable_place(out / "perf.json")
    from pixelreg.bench.perf import run_perf

    say(quiet)("Measuring speed and memory (a few minutes)")
    path, results = write_results(out, "perf.json", lambda: run_perf(device, rss_n))
    finish(path, results, [perf_table(results)], quiet, as_json)
