"""The `pixelreg` command line: parse options, call the library, print.

People read stderr (progress, tables, errors); scripts read stdout (paths, or JSON with
--json). Exit codes: 0 success, 1 an error with a one-line `Error: ...`, 2 a usage error,
130 interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pixelreg import __version__
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
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM, TOLERANCE_PX, Scoring
from pixelreg.fit.defaults import CALIBRATION_FRAMES, MIN_BOUND_BLUR
from pixelreg.io.datasets import save_dataset
from pixelreg.io.files import require_file, writable_target
from pixelreg.io.frames import IMAGE_FORMATS
from pixelreg.io.runs import RunDir, last_checkpoint_of, next_run_dir, resolve_checkpoint
from pixelreg.io.tables import FORMATS, TableWriter
from pixelreg.nn.config import AUTO_MODEL, DEFAULT_LR, MODEL_NAMES, MODEL_SIZES, SIZE_LIMITS, TrainConfig
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import HOLDOUTS, SPLITS, DataSpec, parse_count, parse_range

try:  # typer vendors click from 0.2x on; older releases use click itself
    from typer._click.exceptions import ClickException
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException
    from click.globals import get_current_context


class OneLineErrors(typer.core.TyperGroup):
    """The command group, with every way of ending turned into an exit code and at most one line.

    Usage errors become one `Error:` line (exit 2) instead of a box; Ctrl-C and SIGTERM
    exit 130; a reader that closes the pipe early (`| head -1`) ends the command quietly,
    as the Unix convention has it (exit 141, like a process that SIGPIPE stops).
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            code = run_quietly(
                lambda: super(OneLineErrors, self).main(*args, standalone_mode=False, **kwargs)
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
        sys.exit(code)


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handled as Ctrl-C is: the command stops, cleans up and exits 130."""
    raise KeyboardInterrupt


def reader_left() -> int:
    """The exit code when stdout's reader has gone: quiet, as for a process SIGPIPE stops."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


def run_quietly(invoke: Callable[[], Any]) -> int:
    """Run the command line; its exit code, every error told in one line on stderr."""
    if sys.stderr is None:  # stderr closed: errors go nowhere, but exit codes still tell
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stdout is None:
        write_error("standard output is closed; give the command somewhere to print (> file)")
        return 1
    try:
        result = invoke()
        sys.stdout.flush()
    except BrokenPipeError:
        return reader_left()
    except KeyboardInterrupt:
        write_error("interrupted")
        return 130
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(exc.format_message() + "\n")
        else:
            write_error(" ".join(exc.format_message().split()))
        return exc.exit_code
    except typer.Abort:
        write_error("interrupted")
        return 130
    code = result if isinstance(result, int) else 0
    if code == 130 and not ERRORS_WRITTEN[0]:  # typer swallowed a Ctrl-C while parsing
        write_error("interrupted")
    return code


app = typer.Typer(
    cls=OneLineErrors,
    name="pixelreg",
    help="Train neural networks to locate bright points in images, and measure them honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True, highlight=False, soft_wrap=True)
if not console.is_terminal:  # logs and pipes: room for the tables, no 80-column squeeze
    console.width = max(console.width, 120)
F = TypeVar("F", bound=Callable[..., Any])


ERRORS_WRITTEN = [0]  # how many `Error:` lines this process wrote


def write_error(message: str) -> None:
    """One `Error:` line on stderr."""
    ERRORS_WRITTEN[0] += 1
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one `Error:` line to stderr and return the Exit to raise."""
    write_error(message)
    return typer.Exit(code)


def command(function: F) -> F:
    """Register a command whose expected failures become one `Error:` line, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PixelregError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except BrokenPipeError:
            raise typer.Exit(reader_left()) from None
        except MemoryError:
            raise fail("out of memory; lower --n, --size or --batch-size") from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise fail(f"{exc.strerror or exc}{where}") from None
        except (typer.Exit, ClickException):
            raise  # exit codes and usage errors: OneLineErrors tells them
        except Exception as exc:  # noqa: BLE001 - a bug still gets one line, with details on request
            if os.environ.get("PIXELREG_DEBUG"):
                traceback.print_exc()
            raise fail(
                f"unexpected {type(exc).__name__}: {exc} (set PIXELREG_DEBUG=1 for the traceback "
                "and please report it)"
            ) from None

    return app.command()(wrapper)  # type: ignore[return-value]


def emit(data: Any, as_json: bool) -> None:
    """Write the command's result to stdout: JSON, or one path per line."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
    elif data is not None:
        sys.stdout.write(f"{data}\n")


def parse_size(text: str) -> tuple[int, int]:
    """'50' -> (50, 50); '30x70' or '30,70' -> (30, 70) as (height, width)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        return numbers[0], numbers[0]
    if len(numbers) == 2:
        return numbers[0], numbers[1]
    raise typer.BadParameter(f"--size must be N, or H W (also HxW), got {text!r}")  # a usage error


# --- options --------------------------------------------------------------------------------

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but the result on stdout.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Device = Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")]
SIZE_HELP = "Image size: N for NxN, or H W (also HxW) for rows x columns."
OPTION_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def data_option_parameters(only: tuple[str, ...] | None = None) -> list[inspect.Parameter]:
    """One command-line parameter per DataSpec field, with the spec's default and help.

    `height` and `width` become one `--size`. Adding a field to DataSpec adds its option
    to `generate` and `train`; nothing here names a field but the size.
    """
    defaults = DataSpec()
    parameters = []
    names = {spec_field.name for spec_field in fields(DataSpec)}
    for spec_field in fields(DataSpec):
        name = "size" if spec_field.name == "height" else spec_field.name
        if (
            spec_field.name == "width"
            or spec_field.name.endswith("_max")
            or (only is not None and name not in only)
        ):
            continue
        if f"{name}_max" in names:  # a value or LO:HI, read by `parse_count` or `parse_range`
            annotation = Annotated[str, typer.Option(help=spec_field.metadata["help"])]
            default = format(getattr(defaults, name), "g")
        elif name == "size":
            size = (
                defaults.height
                if defaults.height == defaults.width
                else f"{defaults.height}x{defaults.width}"
            )
            annotation: Any = Annotated[str, typer.Option(help=SIZE_HELP)]
            default: Any = str(size)
        else:
            flag = "--" + name.replace("_", "-")
            kind = OPTION_TYPES[str(spec_field.type)]
            declaration = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
            limits = {key: spec_field.metadata[key] for key in ("min", "max") if key in spec_field.metadata}
            annotation = Annotated[
                kind, typer.Option(declaration, help=spec_field.metadata["help"], **limits)
            ]
            default = spec_field.default  # as declared: holdout stays `auto` until resolved
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    return parameters


SPEC_FILE = inspect.Parameter(
    "spec_file",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="A spec JSON (as `generate --json` prints under spec, or as `calibrate` writes) whose "
            "fields are the data options below; options given beside it override its values.",
            show_default=False,
        ),
    ],
)


def with_data_options(only: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Give a command the data options; it receives their values as one `spec_options` dict.
    Without `only`, also --spec FILE: the options' values from a file, those given overriding."""
    added = data_option_parameters(only)
    from_file = [SPEC_FILE] if only is None else []

    def decorate(function: F) -> F:
        signature = inspect.signature(function, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != "spec_options"]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            spec_options = {p.name: kwargs.pop(p.name) for p in added}
            spec_file = kwargs.pop("spec_file", None)
            if spec_file is not None:
                given = {name for name in spec_options if given_on_command_line(get_current_context(), name)}
                spec_options = {
                    **options_of(read_spec_file(spec_file)),
                    **{n: spec_options[n] for n in given},
                }
            return function(*args, spec_options=spec_options, **kwargs)

        parameters = [*kept, *from_file, *added]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def read_spec_file(path: Path) -> DataSpec:
    """The DataSpec a spec JSON file holds, every field checked."""
    require_file(path, "spec file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PixelregError(f"{path} is not a JSON spec ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        data = data["spec"]  # `generate --json` output holds the spec under this key
    if not isinstance(data, dict):
        raise PixelregError(f"{path} is not a JSON spec: expected an object of data options")
    known = {spec_field.name for spec_field in fields(DataSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PixelregError(f"{path}: unknown field(s) {', '.join(unknown)}; the fields are the data options")
    return DataSpec.from_dict({**DataSpec().to_dict(), **data}, str(path))


def options_of(spec: DataSpec) -> dict[str, Any]:
    """The data options' values (as the command line gives them) that make `spec`."""
    values = {
        k: v for k, v in spec.to_dict().items() if k not in ("height", "width") and not k.endswith("_max")
    }
    values["size"] = f"{spec.height}x{spec.width}"
    values["points"] = str(spec.points) if spec.points_max is None else f"{spec.points}:{spec.points_max}"
    for name in ("blur", "photons", "background_photons"):
        low, high = getattr(spec, name), getattr(spec, f"{name}_max")
        values[name] = repr(float(low)) if high is None else f"{float(low)!r}:{float(high)!r}"
    return values


def make_spec(spec_options: dict[str, Any]) -> DataSpec:
    """A DataSpec from the data options (size and point count given as text)."""
    values = dict(spec_options)
    height, width = parse_size(values.pop("size"))
    if "points" in values:
        values["points"], values["points_max"] = parse_count(str(values.pop("points")))
    for name in ("blur", "photons", "background_photons"):
        if name in values:
            values[name], values[f"{name}_max"] = parse_range(
                str(values.pop(name)), "--" + name.replace("_", "-")
            )
    return DataSpec(height=height, width=width, **values)


@command
@with_data_options()
def generate(
    out: Annotated[Path, typer.Option(help="Where to write the dataset (.npz).")] = Path("dataset.npz"),
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """Render a dataset of images with bright points and write it as .npz."""
    spec = make_spec(spec_options)
    writable_target(out)  # refuse a bad --out before the work, not after
    dataset = make_dataset(spec)
    path = save_dataset(out, dataset)
    counts = {name: int((dataset.split == name).sum()) for name in SPLITS}
    if not quiet:
        console.print(
            f"Wrote {len(dataset)} images of {spec.height}x{spec.width} to {path} "
            f"(train {counts['train']}, val {counts['val']}, test {counts['test']}; holdout {spec.holdout})"
        )
    emit({"path": str(path), "counts": counts, "spec": spec.to_dict()} if as_json else str(path), as_json)


class ConsoleReporter:
    """Training progress on stderr: a live bar on a terminal, one plain line per epoch always."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: Any = None
        self.epochs = 0

    def start(self, run_dir: Path, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        if self.quiet:
            return
        console.print(
            f"Training the {model} model into {run_dir} (epochs {first_epoch}..{epochs}, {batches} batches each)"
        )
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True,
            )  # fmt: skip
            total = batches * (epochs - first_epoch + 1)
            self.task = self.progress.add_task("train", total=total, epoch=first_epoch, epochs=epochs)
            self.progress.start()

    def batch(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def epoch(self, row: dict[str, float], best: bool) -> None:
        if self.progress is not None:
            self.progress.update(self.task, epoch=min(int(row["epoch"]) + 1, self.epochs))
        if not self.quiet:
            counted = (
                f"val_jaccard {row['val_jaccard']:.4f} (threshold {row['threshold']:.2f}, "
                f"merge radius {row['merge_radius']:g} px)  "
                if "val_jaccard" in row
                else ""
            )
            console.print(
                f"epoch {int(row['epoch']):>3}/{self.epochs}  train_loss {row['train_loss']:.3e}  "
                f"val_loss {row['val_loss']:.3e}  {counted}val_mean_px {row['val_mean_px']:.4f}  "
                f"{row['seconds']:.1f}s" + ("  best" if best else "")
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


TRAIN_DEFAULTS = TrainConfig()
SIZES_HELP = {
    arg: ", ".join(f"default {sizes[arg]} for {name}" for name, sizes in MODEL_SIZES.items())
    + f"; {SIZE_LIMITS[arg][0]} to {SIZE_LIMITS[arg][1]}"
    for arg in SIZE_LIMITS
}
MODEL_HELP = (
    f"Architecture: {AUTO_MODEL} or one of {', '.join(MODEL_NAMES)}. {AUTO_MODEL} chooses by the data: "
    "heatmap for the clean task (one bright pixel at a pixel centre: exact, in seconds); offsets, a "
    "detection map with sub-pixel offsets, for noise, blur or sub-pixel spots (at the Cramér-Rao "
    "bound, no pixel locking, but minutes on a CPU)."
)
LR_HELP = ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())


@command
@with_data_options()
def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset .npz from `pixelreg generate`; without it, data is made in memory from the options below."
        ),
    ] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = TRAIN_DEFAULTS.model,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = TRAIN_DEFAULTS.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Images per optimisation step.")
    ] = TRAIN_DEFAULTS.batch_size,
    lr: Annotated[
        float | None,
        typer.Option(help=f"Adam learning rate (cosine-decayed); default {LR_HELP}.", show_default=False),
    ] = TRAIN_DEFAULTS.lr,
    channels: Annotated[
        int | None,
        typer.Option(
            help=f"Feature channels of the heatmap and offsets models ({SIZES_HELP['channels']}).",
            show_default=False,
        ),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(
            help=f"Convolution layers of the heatmap and offsets models ({SIZES_HELP['depth']}).",
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            help="Offsets model: read the image in cells of STRIDE x STRIDE pixels, 1 or 2 (default 1); "
            "2 runs about four times faster, for movies.",
            show_default=False,
        ),
    ] = None,
    mirror: Annotated[
        bool | None,
        typer.Option(
            "--mirror/--no-mirror",
            help="Offsets model: read each image with its three mirror images and average (default); "
            "--no-mirror reads it once, four times faster, for movies (validation reads it the same way).",
            show_default=False,
        ),
    ] = None,
    device: Device = TRAIN_DEFAULTS.device,
    amp: Annotated[
        bool, typer.Option("--amp", help="Mixed precision (bfloat16 autocast); CUDA only.")
    ] = TRAIN_DEFAULTS.amp,
    out: Annotated[Path, typer.Option(help="Directory that holds runs.")] = Path("runs"),
    name: Annotated[
        str | None,
        typer.Option(help="Run name; default: the first free of train, train2, ...", show_default=False),
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Write into an existing run directory.")
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run of this last.pt (or run directory), in its directory, with its settings.",
            show_default=False,
        ),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """Train a model; print the run directory (config, history, best.pt, last.pt) on stdout.

    Under `torchrun --nproc-per-node N -m pixelreg train ...` the processes share every batch
    (DistributedDataParallel) and rank 0 alone writes and prints.
    """
    is_main = os.environ.get("RANK", "0") == "0"
    quiet = quiet or not is_main
    if resume is not None:
        given = [name for name in ctx.params if given_on_command_line(ctx, name)]
        clashing = [name for name in given if name not in ("resume", "quiet", "as_json")]
        if clashing:
            flags = ", ".join("--" + name.replace("_", "-") for name in clashing)
            raise PixelregError(
                f"--resume continues a run with the settings it was started with; drop {flags} "
                "(or start a new run)"
            )
        require_file(last_checkpoint_of(resume), "checkpoint")
    else:
        model_args = {
            key: value
            for key, value in (
                ("channels", channels),
                ("depth", depth),
                ("stride", stride),
                ("mirror", mirror),
            )
            if value is not None
        }
        config = TrainConfig(
            model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=spec_options["seed"],
            device=device, data=str(data) if data is not None else None,
            spec=make_spec(spec_options).to_dict() if data is None else {},
            model_args=model_args, amp=amp,
        )  # fmt: skip
        config.validate()
        if data is not None:
            require_file(data, "dataset")
        if out.exists() and not out.is_dir():
            raise PixelregError(f"cannot create run directory in {out}: it exists and is not a folder")
        # under torchrun only rank 0 picks the run directory; train() hands it to the others
        run_dir = next_run_dir(out, name, exist_ok) if is_main else out

    from pixelreg.nn.train import TrainingInterrupted, leave_torchrun
    from pixelreg.nn.train import resume as resume_training
    from pixelreg.nn.train import train as run_training

    reporter = ConsoleReporter(quiet)
    try:
        result = (
            resume_training(resume, reporter)
            if resume is not None
            else run_training(config, run_dir, reporter)
        )
        leave_torchrun()
    except TrainingInterrupted as stop:
        reporter.close()
        ERRORS_WRITTEN[0] += 1  # the lines below say it
        if is_main and stop.epoch == 0:
            sys.stderr.write("Interrupted before the first epoch finished; nothing was kept.\n")
        elif is_main:
            sys.stderr.write(
                f"Interrupted after epoch {stop.epoch}; {stop.last_path} holds the last finished epoch. "
                f"Resume with: pixelreg train --resume {stop.last_path}\n"
            )
        raise typer.Exit(130) from None
    finally:
        reporter.close()
        leave_torchrun(wait=False)
    if not quiet:
        if result.already_finished:
            console.print(f"{result.run_dir} already finished all its epochs; nothing to resume.")
        else:
            console.print(
                f"Best epoch {result.best_epoch}: val_mean_px {result.best_val_mean_px:.4f}. Run: {result.run_dir}"
            )
    summary = {
        "run_dir": str(result.run_dir),
        "best": str(result.best_path),
        "last": str(result.last_path),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_mean_px": result.best_val_mean_px,
    }
    if is_main:
        emit(summary if as_json else str(result.run_dir), as_json)


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option `name` (rather than its default taking effect)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def fitted_table(title: str, headers: list[str], rows: list[list[str]], droppable: list[str]) -> Table:
    """A table that fits the console: the `droppable` columns go, first named first, until it
    does; what still does not fit folds onto more lines. A number is never cut short.
    """
    shown = list(headers)
    while True:
        table = Table(title=title, title_style="bold")
        for header in shown:
            first = header == headers[0]
            table.add_column(header, justify="left" if first else "right", overflow="fold", min_width=1)
        for row in rows:
            table.add_row(*(cell for header, cell in zip(headers, row, strict=True) if header in shown))
        gone = [header for header in droppable if header in shown]
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural <= console.width or not gone:
            if len(shown) < len(headers):
                table.caption = (
                    f"(not shown at this width: {', '.join(h for h in headers if h not in shown)})"
                )
            return table
        shown.remove(gone[0])


SHARES = ("exact", "recall_1px", "recall", "precision", "jaccard")  # shown as percentages


def metrics_table(report: dict[str, Any]) -> Table:
    """The metrics of an evaluation, and of the classical baselines, as a table that fits."""
    counting = "thresholds" in report
    columns = ["n", "mean_px", "median_px", "rmse_px", "rmse_hits_px", "max_px", "exact", "recall_1px"]
    if counting:
        columns = ["n", "jaccard", "recall", "precision", "rmse_px", "efficiency", "fp", "fn"]
    groups = [
        (name, report["metrics"][name]) for name in ("all", "seen", "unseen") if name in report["metrics"]
    ]
    groups += [(f"every pixel, {name}", block) for name, block in report.get("positions", {}).items()]
    groups += [(f"{name} (classical)", block) for name, block in report.get("baselines", {}).items()]
    rows = []
    for name, block in groups:
        cells = [name, str(block["n"])]
        for key in columns[1:]:
            value = block[key]
            if value is None:
                cells.append("-")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            elif key == "efficiency":
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.2%}" if key in SHARES else f"{value:.4f}")
        rows.append(cells)
    droppable = ["median_px", "max_px", "rmse_hits_px", "rmse_px", "recall_1px", "fp", "fn", "efficiency"]
    table = fitted_table(
        f"{report['model']} on split {report['split']!r}", ["group", *columns], rows, droppable
    )
    notes = []
    if report.get("crlb"):
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in report["crlb"]["rmse_over_crlb"].items())
        alone = " (each spot alone)" if counting else ""
        notes.append(f"Cramér-Rao bound{alone} {report['crlb']['crlb_px']:.4f} px; rmse / bound: {ratios}")
    if counting:
        separation = report["recall_by_separation"]
        edges, found = separation["edges_px"], separation["methods"]["model"]
        bins = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:], strict=False)] + [f">={edges[-1]:g}"]
        recalls = ", ".join(
            f"{label} px {'-' if r is None else format(r, '.1%')} ({n:,})"
            for label, r, n in zip(bins, found["recall"], found["truths"], strict=True)
        )
        notes.append(f"model's recall by distance to the nearest other spot: {recalls}")
        chosen = ", ".join(f"{k} {v:g}" for k, v in report["thresholds"].items())
        notes.append(
            f"pairs within {report['tolerance_px']:g} px; efficiency at {report['pixel_size_nm']:g} nm "
            f"pixels; thresholds: {chosen}; model's merge radius {report['merge_radius_px']:g} px"
        )
    if table.caption:
        notes.append(table.caption)
    table.caption = "\n".join(notes) or None
    return table


Threshold = Annotated[
    float | None,
    typer.Option(
        help="Least confidence (0 to 1) of a detection kept by a counting model; default: the "
        "threshold chosen on validation, stored in the checkpoint.",
        show_default=False,
    ),
]
CheckpointArg = Annotated[
    Path, typer.Argument(help="A checkpoint (.pt), or a run directory meaning its best.pt.")
]


@command
def evaluate(
    checkpoint: CheckpointArg,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset .npz; default: rebuild the training data from the checkpoint.", show_default=False
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate: train, val, test or all.")] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for metrics.json and predictions.npz; default: beside the checkpoint.",
            show_default=False,
        ),
    ] = None,
    threshold: Threshold = None,
    tolerance: Annotated[
        float,
        typer.Option(
            help="A prediction and a truth pair only within this distance (px); 2.5 px is 250 nm at 100 nm pixels."
        ),
    ] = TOLERANCE_PX,
    pixel_size: Annotated[
        float, typer.Option(help="Pixel size in nm, for the efficiency (which weighs rmse in nm).")
    ] = PIXEL_SIZE_NM,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Evaluate a checkpoint: errors on all, seen and never-seen positions; writes metrics.json.

    Detections are paired with truths greedily, nearest first, within --tolerance (as the SMLM
    challenge 2016 does), giving recall, precision, F1, Jaccard index and efficiency.
    """
    scoring = Scoring(tolerance, pixel_size, threshold)
    if split not in (*SPLITS, "all"):
        raise PixelregError(f"--split must be one of {', '.join(SPLITS)}, all; got {split!r}")
    checkpoint = require_file(resolve_checkpoint(checkpoint), "checkpoint")
    if data is not None:
        require_file(data, "dataset")
    if out is not None and out.exists() and not out.is_dir():
        raise PixelregError(f"--out {out} is not a folder; give one for metrics.json and predictions.npz")

    from pixelreg.evaluate.report import evaluate as run_evaluation
    from pixelreg.evaluate.report import save_evaluation

    evaluation = run_evaluation(checkpoint, data, split, device, scoring=scoring)
    metrics_path, _ = save_evaluation(evaluation, out if out is not None else checkpoint.parent)
    if not quiet:
        console.print(metrics_table(evaluation.report))
        if "photometry" in evaluation.report:
            console.print(photometry_table(evaluation.report["photometry"]))
    emit(evaluation.report if as_json else str(metrics_path), as_json)


@command
def predict(
    ctx: typer.Context,
    checkpoint: CheckpointArg,
    images: Annotated[list[Path], typer.Argument(help=IMAGE_FORMATS, show_default=False)],
    threshold: Threshold = None,
    baseline: Annotated[
        float | None,
        typer.Option(help="Camera model: the ADU a dark pixel reads today, if not the training data's."),
    ] = None,
    e_per_adu: Annotated[
        float | None,
        typer.Option(help="Camera model: photoelectrons per A/D count, if not the training data's."),
    ] = None,
    em_gain: Annotated[
        float | None, typer.Option(help="Camera model: EM gain (0 or 1: none), if not the training data's.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the table to this file (atomically) instead of stdout.", show_default=False),
    ] = None,
    table_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="csv: pixelreg's table, one row per localization (path,index,x,y,confidence,photons,"
            "background,uncertainty; px; empty where the model has no such output). thunderstorm: "
            "ThunderSTORM's CSV (id, frame 1-based, x/y/sigma/uncertainty in nm at --pixel-size, "
            "ImageJ's pixel convention: the centre of pixel 0 at half a pixel; several files number "
            "their frames on as one movie), which ThunderSTORM, Picasso and SMAP read.",
        ),
    ] = "csv",
    pixel_size: Annotated[
        float, typer.Option(help="With --format thunderstorm: the camera's pixel size in nm.")
    ] = PIXEL_SIZE_NM,
    mirror: Annotated[
        bool | None,
        typer.Option(
            "--mirror/--no-mirror",
            help="Offsets model: read each frame with its three mirror images and average, or once (four "
            "times faster); default: as the model was trained and validated (`train --no-mirror`).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="Offsets model: the convolutions' arithmetic. auto: bfloat16 where the hardware has it "
            "(a CPU with AVX512-BF16 or AMX, a recent GPU; about twice as fast, positions within "
            "thousandths of a pixel), else float32.",
        ),
    ] = "auto",
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Locate the points in image files and movies, one row per localization: CSV on stdout or
    in --out, or JSON. Frames are read a chunk at a time and large frames in tiles, so memory
    stays flat in the movie's length."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise PixelregError(f"--threshold must be in [0, 1], got {threshold:g}")
    if table_format not in FORMATS:
        raise PixelregError(f"--format must be one of {', '.join(FORMATS)}, got {table_format!r}")
    if not (math.isfinite(pixel_size) and 0 < pixel_size <= 1e6):
        raise PixelregError(f"--pixel-size must be a positive number of nm up to 1e6, got {pixel_size:g}")
    if as_json and (out is not None or table_format != "csv"):
        raise PixelregError("--json prints the rows on stdout; it does not combine with --out or --format")
    if given_on_command_line(ctx, "pixel_size") and table_format != "thunderstorm":
        raise PixelregError("--pixel-size applies with --format thunderstorm only")
    if out is not None:
        refuse_overwriting(out, [resolve_checkpoint(checkpoint), *images])
    camera_changes = {
        name: value
        for name, value in (("baseline", baseline), ("e_per_adu", e_per_adu), ("em_gain", em_gain))
        if value is not None
    }
    require_file(resolve_checkpoint(checkpoint), "checkpoint")
    for path in images:
        require_file(path, "image")

    from pixelreg.io.checkpoints import load_model
    from pixelreg.io.files import atomic_path
    from pixelreg.io.frames import open_frames
    from pixelreg.nn.inference import (
        can_count,
        check_frames,
        localize_frames,
        resolve_device,
        set_precision,
        table_columns,
    )

    torch_device = resolve_device(device)
    model, payload = load_model(checkpoint, torch_device)
    spec = DataSpec.from_dict(payload["data_spec"]) if payload.get("data_spec") else None
    if camera_changes:
        if model.camera is None:
            flags = ", ".join("--" + name.replace("_", "-") for name in camera_changes)
            verb = "applies" if len(camera_changes) == 1 else "apply"
            raise PixelregError(
                f"{flags} {verb} to a model trained on camera images (--photons); this one reads grey levels"
            )
        model.camera = dataclasses.replace(model.camera, **camera_changes)
    if threshold is not None:
        if not can_count(model):
            raise PixelregError(
                f"--threshold applies to a model that counts (trained with --points LO:HI); this "
                f"{model.name} model returns {model.points} point(s) per image"
            )
        model.threshold = threshold
    if mirror is not None:
        if not hasattr(model, "mirror"):
            raise PixelregError(
                f"--mirror/--no-mirror apply to the offsets model; this is a {model.name} model"
            )
        model.mirror = mirror
    set_precision(model, precision, torch_device)
    movies = [open_frames(path, counts=model.camera is not None) for path in images]  # all checked first
    for movie in movies:
        check_frames(model, movie)
    with FrameProgress(sum(movie.count for movie in movies), quiet) as progress:
        if as_json:
            rows = [
                row for movie in movies for row in localize_frames(model, movie, torch_device, spec, progress)
            ]
            emit(rows, True)
            return
        camera = model.camera
        sigma = spec.mean_blur if spec is not None and spec.mean_blur > 0 else None

        def write_table(stream: Any) -> int:
            table = TableWriter(
                stream,
                table_format,
                pixel_size,
                table_columns(model),
                sigma,
                None if camera is None else camera.background_std,
            )
            for movie in movies:
                table.start_file(str(movie.path), movie.count)
                table.write(localize_frames(model, movie, torch_device, spec, progress))
            return table.count

        if out is None:
            write_table(sys.stdout)
            return
        with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
            count = write_table(stream)
    if not quiet:
        frames = sum(m.count for m in movies)
        console.print(
            f"{count:,} localization{'s' * (count != 1)} in {frames:,} frame{'s' * (frames != 1)} written to {out}"
        )
    emit(str(out), False)


MOVIE_OPTIONS = ("movie", "checkpoint", "epochs", "out", "device", "quiet", "as_json")
CALIBRATION_OPTIONS = ("calibration", "epochs", "out", "device", "quiet", "as_json")


def refuse_overwriting(out: Path, inputs: list[Path]) -> None:
    """Refuse an output that would replace one of the command's own inputs, or is no file."""
    target = writable_target(out)
    for path in inputs:
        if path.exists() and Path(os.path.realpath(path)) == target:
            raise PixelregError(f"--out {out} is one of this command's inputs; choose another file")


class FrameProgress:
    """Frames done, on stderr: a live bar on a terminal; otherwise, for a job of more than a few
    seconds, a plain line every tenth of the work, at most every LINE_SECONDS, and at the end;
    nothing with --quiet."""

    LINE_SECONDS = 5.0

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done, self.shown = total, quiet, 0, 0
        self.started = self.last_line = time.perf_counter()
        self.progress: Progress | None = None

    def __enter__(self) -> FrameProgress:
        if not self.quiet and console.is_terminal:
            self.progress = Progress(
                TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[rate]}"), console=console, transient=True,
                redirect_stdout=False, redirect_stderr=False,  # stdout carries the table, never the bar's
            )  # fmt: skip
            self.task = self.progress.add_task("frames", total=self.total, rate="")
            self.progress.start()
        return self

    def __call__(self, count: int) -> None:
        self.done += count
        rate = f"{self.done / max(time.perf_counter() - self.started, 1e-9):.1f} frames/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, rate=rate)
        elif not self.quiet:
            now = time.perf_counter()
            due = self.done - self.shown >= self.total / 10 and now - self.last_line >= self.LINE_SECONDS
            if due or (self.done == self.total and self.shown > 0):
                self.shown, self.last_line = self.done, now
                console.print(f"frames {self.done:,}/{self.total:,} ({rate})")

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


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
    per frame from its raw frames, and write them as a spec to train a model for it."""
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
    for target in (out, figure):
        refuse_overwriting(target, files)
        writable_target(target)
    for path in files:
        require_file(path, "image")
    say = (lambda message: None) if quiet else (lambda message: console.print(message))
    pixels = read_calibration_frames(files, frames)
    result = estimate(pixels, baseline, e_per_adu, em_gain, say)
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


def refuse_options_beside(ctx: typer.Context, allowed: tuple[str, ...], flag: str) -> None:
    """Refuse any option given on the command line that a bench mode (`flag`) does not take."""
    foreign = [name for name in ctx.params if name not in allowed and given_on_command_line(ctx, name)]
    if foreign:
        raise PixelregError(f"--{foreign[0].replace('_', '-')} does not apply with {flag}")


def require_empty_folder(out: Path, filename: str | None = None) -> None:
    """Refuse, before any work, a bench's --out that is not an empty (or new) folder, or whose
    results file `filename` could not be written."""
    if filename is not None:
        writable_target(out / filename)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PixelregError(f"{out} is not an empty folder; choose another --out or remove it")


def written_bench(out: Path, filename: str, run: Callable[[], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """`run()`'s results written to out/filename, the folder made for it; a bench that does not
    finish leaves no half of itself."""
    from pixelreg.io.files import make_folders, remove_folders, write_json

    created = make_folders(out, f"cannot create {out}")
    try:
        results = run()
        return write_json(out / filename, results), results
    except BaseException:
        remove_folders(created)
        raise


def calibration_bench_table(name: str, result: dict[str, Any]) -> Table:
    """One foreign movie of `bench --calibration`: each method's scores, and what calibrate
    estimated against the renderer's truth."""
    cells = [
        [
            method,
            shown(row["jaccard"], ".2%"),
            shown(row["recall"], ".2%"),
            shown(row["precision"], ".2%"),
            shown(row["rmse_px"], ".4f"),
            shown(row.get("rmse_over_bound"), ".2f"),
            ""
            if "same_spots" not in row
            else f"{row['same_spots']['theirs_px']} vs {row['same_spots']['ours_px']}",
            shown(row["frames_per_second"], ".1f"),
        ]
        for method, row in result["methods"].items()
    ]
    table = fitted_table(
        f"{name}: {result['frames']} frames of {result['size']}x{result['size']} "
        f"(scored after the first {result['tuning_frames']})",
        [
            "method",
            "jaccard",
            "recall",
            "precision",
            "rmse px",
            "rmse/bound",
            "same spots: theirs vs ours",
            "frames/s",
        ],
        cells,
        [],
    )
    truth, estimates = result["truth"], result["calibration"]["estimates"]
    pairs = [
        ("sigma", "blur"),
        ("baseline", "baseline"),
        ("e_per_adu", "e_per_adu"),
        ("read_noise", "read_noise"),
        ("photons_min", "photons"),
        ("photons_max", "photons_max"),
        ("background_min", "background_photons"),
        ("background_max", "background_photons_max"),
        ("spots_per_frame", "spots_per_frame"),
    ]
    compared = ", ".join(f"{key} {truth[key]:.4g} -> {estimates[name]['value']:.4g}" for key, name in pairs)
    table.caption = f"true -> calibrated: {compared}; goal met: {'yes' if result['goal_met'] else 'no'}"
    return table


def calibration_table(result: Any) -> Table:
    """`calibrate`'s estimates: value, how each was found, and its spread."""
    rows = [
        [name, f"{e.value:.4g}", e.how, "" if e.spread is None else f"{e.spread:.2g}", e.note]
        for name, e in result.estimates.items()
    ]
    return fitted_table(
        f"pixelreg calibrate: {result.frames} frames of {result.size[0]}x{result.size[1]}",
        ["parameter", "value", "how", "+-", "from"],
        rows,
        ["from"],
    )


@command
def plot(
    ctx: typer.Context,
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory made by `pixelreg train`, or a localization table (.csv) made by "
            "`pixelreg predict` (pixelreg's columns or ThunderSTORM's).",
            metavar="RUN_DIR|LOCS.csv",
        ),
    ],
    zoom: Annotated[
        int, typer.Option(help="Table: the rendering's pixels per camera pixel, along each axis (1 to 50).")
    ] = 10,
    pixel_size: Annotated[
        float, typer.Option(help="Table: nm per camera pixel, to read a ThunderSTORM table's nm.")
    ] = PIXEL_SIZE_NM,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Table: the figure to write; default: the table's name with .png.", show_default=False
        ),
    ] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Draw a run's figures into RUN_DIR/figures (evaluating best.pt first if needed), or a
    localization table's super-resolution rendering (each localization a Gaussian of its
    uncertainty on a grid --zoom times finer) beside histograms of photons and uncertainties."""
    if run_dir.suffix.lower() == ".csv" and not run_dir.is_dir():
        from pixelreg.io.tables import read_table
        from pixelreg.plots.localizations import plot_localizations

        if not (math.isfinite(pixel_size) and 0 < pixel_size <= 1e6):
            raise PixelregError(f"--pixel-size must be a positive number of nm up to 1e6, got {pixel_size:g}")
        table = read_table(run_dir, pixel_size)
        figure = out if out is not None else run_dir.with_suffix(".png")
        if figure.suffix.lower() != ".png":
            raise PixelregError(f"--out {figure}: the figure is a PNG; give a .png file")
        refuse_overwriting(figure, [run_dir])
        shape = (  # the frame the localizations lie in: up to the farthest one
            max(1, math.ceil(float(table["y"].max(initial=0.0)) + 0.5)),
            max(1, math.ceil(float(table["x"].max(initial=0.0)) + 0.5)),
        )
        emit(str(plot_localizations(table, shape, figure, zoom, title=run_dir.name)), False)
        return
    for name in ("zoom", "pixel_size", "out"):
        if given_on_command_line(ctx, name):
            raise PixelregError(f"--{name.replace('_', '-')} applies to a localization table (.csv) only")
    RunDir(run_dir).require_trained()

    from pixelreg.plots.run import plot_run

    say = (lambda message: None) if quiet else console.print
    for path in plot_run(run_dir, device, say):
        emit(str(path), False)


def _numbers(values: tuple[float, ...]) -> str:
    return ",".join(f"{value:g}" for value in values)


@command
@with_data_options(only=("n", "size", "seed"))
def bench(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for the bench's runs and its JSON.")] = Path(
        "runs/bench"
    ),
    epochs: Annotated[
        int | None,
        typer.Option(
            help=f"Epochs for every model, the same budget for all [default: {BENCH_EPOCHS}; {PRECISION_EPOCHS} with --precision]."
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated models to compare [default: all; {','.join(PRECISION_MODELS)} with --precision]."
        ),
    ] = None,
    holdouts: Annotated[str, typer.Option(help="Comma-separated holdouts to run.")] = ",".join(
        BENCH_HOLDOUTS
    ),
    device: Device = "auto",
    precision: Annotated[
        bool,
        typer.Option(
            "--precision",
            help="Run the precision grid instead: sub-pixel spots, noise 10, background 50, blur "
            f"{_numbers(PRECISION_BLURS)} by brightness {_numbers(PRECISION_BRIGHTNESSES)}; every model and "
            f"classical method against the Cramér-Rao bound, with its pixel locking (bias_px); "
            f"--n defaults to {PRECISION_N:,} per cell. Writes precision.json and precision.png.",
        ),
    ] = False,
    blurs: Annotated[
        str, typer.Option(help="With --precision: comma-separated blurs (PSF sigma, px).")
    ] = _numbers(PRECISION_BLURS),
    brightnesses: Annotated[
        str, typer.Option(help="With --precision: comma-separated spot brightnesses (grey levels summed).")
    ] = _numbers(PRECISION_BRIGHTNESSES),
    density: Annotated[
        bool,
        typer.Option(
            "--density",
            help="Run the density bench instead: the counting model against the classical detectors "
            f"(and trackpy, when installed) at {', '.join(DENSITY_RANGES)} spots per image, "
            f"{DENSITY_SIZE}x{DENSITY_SIZE} by default, "
            + ", ".join(f"{key} {value:g}" for key, value in DENSITY_CONDITIONS.items() if key != "subpixel")
            + "; "
            f"Jaccard index and efficiency; --n defaults to {DENSITY_N:,} per density. Each density's model "
            f"trains on LO to at least {DENSITY_TRAINING_MOST} spots per 64x64 pixels, where close pairs are "
            "common enough to learn from. Writes density.json and density.png.",
        ),
    ] = False,
    densities: Annotated[
        str, typer.Option(help="With --density: comma-separated ranges LO:HI of spots per image.")
    ] = ",".join(DENSITY_RANGES),
    perf: Annotated[
        bool, typer.Option("--perf", help="Measure speed and memory instead (writes perf.json).")
    ] = False,
    movie: Annotated[
        bool,
        typer.Option(
            "--movie",
            help=f"Time `predict` on a movie instead: a 16-bit TIFF of {MOVIE_FRAMES} frames of "
            f"{MOVIE_SIZE}x{MOVIE_SIZE} with about {MOVIE_SPOTS} spots each (an sCMOS-like camera), "
            "localized by a model trained for it (--epochs) and by trackpy.locate where installed; "
            "frames/s, Mpx/s, Jaccard index and rmse of each. Writes movie.json.",
        ),
    ] = False,
    calibration: Annotated[
        bool,
        typer.Option(
            "--calibration",
            help="The real-data workflow instead: on movies of two other renderers (blinking spots on "
            "an EMCCD, a star field on an sCMOS), calibrate, train on the estimates (--epochs) and "
            "localize, against a model trained on the true parameters and trackpy.locate and "
            "photutils' DAOStarFinder where installed. Writes calibration.json.",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="With --movie: time this counting model of camera images instead of training one.",
            show_default=False,
        ),
    ] = None,
    rss_n: Annotated[
        int, typer.Option(help="With --perf: images of the training run whose peak memory is measured.")
    ] = 1_000_000,
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """Train and evaluate every model on the same data and budget, beside argmax; writes bench.json.

    With --precision: the precision grid (see that option). With --perf: images per second of
    generation, training and inference for every model beside numpy argmax, peak memory of a
    large training run, and the time the default `train` takes to be exact on unseen
    positions; writes perf.json.
    """
    from pixelreg.io.files import make_folders, remove_folders, write_json

    if perf + precision + density + movie + calibration > 1:
        raise PixelregError(
            "--perf, --precision, --density, --movie and --calibration are different benches; choose one"
        )
    if checkpoint is not None and not movie:
        raise PixelregError("--checkpoint applies with --movie only")
    say = (lambda message: None) if quiet else console.print
    if calibration:
        refuse_options_beside(ctx, CALIBRATION_OPTIONS, "--calibration")
        require_empty_folder(out, "calibration.json")
        epochs = epochs if epochs is not None else CALIBRATION_EPOCHS
        TrainConfig(model="offsets", epochs=epochs, device=device).validate()
        from pixelreg.bench.calibration import run_calibration_bench

        path, results = written_bench(
            out,
            "calibration.json",
            lambda: run_calibration_bench(out, epochs, device, ConsoleReporter(quiet=True), say),
        )
        if not quiet:
            for name, result in results.items():
                console.print(calibration_bench_table(name, result))
        emit({"path": str(path), **results} if as_json else str(path), as_json)
        return
    if movie:
        refuse_options_beside(ctx, MOVIE_OPTIONS, "--movie")
        if checkpoint is not None:
            if epochs is not None:
                raise PixelregError("--epochs trains the movie's model; with --checkpoint none is trained")
            checkpoint = require_file(resolve_checkpoint(checkpoint), "checkpoint")
        require_empty_folder(out, "movie.json")
        epochs = epochs if epochs is not None else MOVIE_EPOCHS
        TrainConfig(model="offsets", epochs=epochs, device=device).validate()
        from pixelreg.bench.movie import run_movie

        path, results = written_bench(
            out,
            "movie.json",
            lambda: run_movie(
                out, epochs, device, checkpoint=checkpoint, reporter=ConsoleReporter(quiet=True), say=say
            ),
        )
        if not quiet:
            console.print(movie_table(results))
        emit({"path": str(path), **results} if as_json else str(path), as_json)
        return
    owners = {"blurs": "--precision", "brightnesses": "--precision", "densities": "--density"}
    for name, owner in owners.items():
        if given_on_command_line(ctx, name) and not (precision if owner == "--precision" else density):
            raise PixelregError(f"--{name} applies with {owner} only")
    for name in ("holdouts", "models"):
        if given_on_command_line(ctx, name) and (precision and name == "holdouts" or density):
            raise PixelregError(f"--{name} does not apply with {'--precision' if precision else '--density'}")
    if perf:
        if rss_n < 10:
            raise PixelregError(f"--rss-n must be at least 10, got {rss_n}")
        writable_target(out / "perf.json")
        from pixelreg.bench.perf import run_perf

        if not quiet:
            console.print("Measuring speed and memory (a few minutes)")
        results = run_perf(device, rss_n)
        path = write_json(out / "perf.json", results)
        if not quiet:
            console.print(perf_table(results))
        emit({"path": str(path), **results} if as_json else str(path), as_json)
        return

    if density:
        epochs = epochs if epochs is not None else DENSITY_EPOCHS
        TrainConfig(model="offsets", epochs=epochs, device=device).validate()
        spec_options = {**spec_options}
        if not given_on_command_line(ctx, "n"):
            spec_options["n"] = DENSITY_N
        if not given_on_command_line(ctx, "size"):
            spec_options["size"] = str(DENSITY_SIZE)
        ranges = comma_list(densities, "--densities")
        from pixelreg.bench.density import density_spec

        for counts in ranges:
            density_spec(make_spec(spec_options), counts)  # a bad range: refused before any work
    default_models = PRECISION_MODELS if precision else MODEL_NAMES
    model_names = comma_list(models, "--models") if models is not None else default_models
    epochs = epochs if epochs is not None else (PRECISION_EPOCHS if precision else BENCH_EPOCHS)
    for name in model_names:
        TrainConfig(model=name, epochs=epochs, device=device).validate()
    if precision:
        if not given_on_command_line(ctx, "n"):
            spec_options = {**spec_options, "n": PRECISION_N}
        blur_values = number_list(blurs, "--blurs", least=MIN_BOUND_BLUR)
        brightness_values = number_list(brightnesses, "--brightnesses", least=0.0, above=True)
    else:
        holdout_names = comma_list(holdouts, "--holdouts")
        for name in holdout_names:
            if name not in HOLDOUTS:
                raise PixelregError(f"--holdouts takes {', '.join(HOLDOUTS)}; got {name!r}")
    spec = make_spec(spec_options)
    require_empty_folder(out)

    def reporter_for(label: str) -> ConsoleReporter:
        if not quiet:
            console.print(f"[bold]{label}[/bold]")
        return ConsoleReporter(quiet=True)

    created = make_folders(out, f"cannot create {out}")
    try:
        if density:
            from pixelreg.bench.density import run_density
            from pixelreg.plots.detections import plot_density

            results = run_density(out, spec, epochs, device, ranges, reporter_for)
            path = write_json(out / "density.json", results)
            plot_density(results, out / "density.png")
        elif precision:
            from pixelreg.bench.precision import run_precision
            from pixelreg.plots.precision import plot_precision_grid

            results = run_precision(
                out, spec, epochs, model_names, device, blur_values, brightness_values, reporter_for
            )
            path = write_json(out / "precision.json", results)
            plot_precision_grid(results, out / "precision.png")
        else:
            from pixelreg.bench.holdouts import run_bench

            rows = run_bench(out, spec, epochs, model_names, holdout_names, device, spec.seed, reporter_for)
            results = {"spec": spec.to_dict(), "epochs": epochs, "rows": rows}
            path = write_json(out / "bench.json", results)
    except BaseException:
        remove_folders(created)  # a bench that did not finish leaves no half of itself
        raise
    if not quiet:
        if density:
            console.print(density_table(results))
        else:
            console.print(precision_table(results) if precision else bench_table(results["rows"]))
    emit({"path": str(path), **results} if as_json else str(path), as_json)


def number_list(text: str, option: str, least: float, above: bool = False) -> tuple[float, ...]:
    """'1, 1.5' -> (1.0, 1.5); each number finite and at least (or, with `above`, above) `least`."""
    values = []
    for word in comma_list(text, option):
        try:
            value = float(word)
        except ValueError:
            raise PixelregError(f"{option} takes numbers; got {word!r}") from None
        if not math.isfinite(value) or value < least or (above and value == least):
            raise PixelregError(
                f"{option} takes numbers {'above' if above else 'from'} {least:g}; got {word}"
            )
        values.append(value)
    return tuple(values)


def comma_list(text: str, option: str) -> tuple[str, ...]:
    """'a, b' -> ('a', 'b'); an empty list or a name given twice is refused."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise PixelregError(f"{option} names nothing; give a comma-separated list")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise PixelregError(f"{option} names {', '.join(twice)} more than once")
    return names


BENCH_HEADERS = {
    "parameters": "params",
    "train_seconds": "train s",
    "unseen_mean_px": "unseen mean px",
    "all_positions_exact": "every pixel exact",
    "images_per_second": "images/s",
}


def bench_table(rows: list[dict[str, Any]]) -> Table:
    """Bench rows as a table that fits."""
    columns = ["holdout", "model", "parameters", "train_seconds", "unseen_mean_px", "unseen_exact"]
    columns += ["all_positions_exact", "images_per_second"]
    cells = []
    for row in rows:
        line = []
        for column in columns:
            value = row[column]
            if value is None:
                line.append("-")
            elif column.endswith("exact"):
                line.append(f"{value:.2%}")
            elif isinstance(value, float):
                line.append(f"{value:.4f}" if column.endswith("px") else f"{value:.1f}")
            else:
                line.append(f"{value:,}" if isinstance(value, int) else str(value))
        cells.append(line)
    headers = [BENCH_HEADERS.get(column, column.replace("_", " ")) for column in columns]
    return fitted_table("pixelreg bench", headers, cells, ["params", "images/s", "train s"])


def shown(value: Any, form: str) -> str:
    """A table cell: the value formatted, or a dash where there is none."""
    return "-" if value is None else format(value, form)


def precision_table(results: dict[str, Any]) -> Table:
    """The precision grid as a table: rmse over the bound, pixel locking, training seconds."""

    cells = [
        [
            f"{row['blur']:g}",
            f"{row['brightness']:g}",
            row["method"],
            shown(row["crlb_px"], ".4f"),
            shown(row["rmse_over_crlb"], ".3f"),
            shown(row["rmse_common_over_crlb"], ".3f"),
            shown(row["rmse_hits_over_crlb"], ".3f"),
            shown(row["recall_1px"], ".2%"),
            shown(row["bias_px"], ".4f"),
            shown(row["train_seconds"], ".0f"),
        ]
        for row in results["rows"]
    ]
    headers = ["blur", "brightness", "method", "bound px", "rmse/bound", "common/bound", "found/bound"]
    headers += ["found", "bias px", "train s"]
    droppable = ["found/bound", "train s", "bound px", "found"]
    table = fitted_table("pixelreg bench --precision", headers, cells, droppable)
    legend = (
        "rmse over every spot; over the spots every model and the fit found (common); over the "
        "spots this method found within 1 px (found)"
    )
    table.caption = legend if table.caption is None else f"{legend}\n{table.caption}"
    return table


def photometry_table(photometry: dict[str, Any]) -> Table:
    """The camera model's scoring: rmse over the Poisson bound in each photon decile, then each
    method's bias, calibration and photometry."""
    deciles = photometry["deciles"]
    methods = photometry["methods"]
    cells = [
        [
            f"{low:,.0f}-{high:,.0f}",
            f"{spots:,}",
            shown(bound, ".4f"),
            *(shown(methods[name]["decile_rmse_over_bound"][d], ".3f") for name in methods),
        ]
        for d, (low, high, spots, bound) in enumerate(
            zip(
                deciles["photons_from"],
                deciles["photons_to"],
                deciles["spots"],
                deciles["bound_px"],
                strict=True,
            )
        )
    ]
    headers = ["photons", "spots", "bound px", *(f"{name} rmse/bound" for name in methods)]
    table = fitted_table(
        "by photon decile (Poisson bound, every parameter unknown)", headers, cells, ["spots"]
    )
    lines = []
    for name, block in methods.items():
        spread = block["error_over_uncertainty_std"]
        lines.append(
            f"{name}: rmse {shown(block['rmse_px'], '.4f')} px = {shown(block['rmse_over_bound'], '.3f')} x bound; "
            f"bias x {shown(block['bias_px']['x'], '+.4f')}, y {shown(block['bias_px']['y'], '+.4f')} px; "
            f"std(error / uncertainty) x {shown(spread['x'], '.3f')}, y {shown(spread['y'], '.3f')}; "
            f"photons rmse {shown(block['photons_rmse_relative'], '.2%')} "
            f"(bound {shown(photometry['photons_bound_relative'], '.2%')}), "
            f"background rmse {shown(block['background_rmse'], '.3f')} photons/px"
        )
    table.caption = "\n".join(lines)
    return table


def density_table(results: dict[str, Any]) -> Table:
    """The density bench as a table: each method's detection scores at each density."""

    cells = [
        [
            row["points"],
            f"{row['mean_spots']:.1f}",
            row["method"],
            shown(row["jaccard"], ".2%"),
            shown(row["recall"], ".2%"),
            shown(row["precision"], ".2%"),
            shown(row["rmse_px"], ".4f"),
            shown(row["rmse_over_crlb"], ".2f"),
            shown(row["efficiency"], ".1f"),
        ]
        for row in results["rows"]
    ]
    headers = [
        "spots",
        "mean",
        "method",
        "jaccard",
        "recall",
        "precision",
        "rmse px",
        "rmse/bound",
        "efficiency",
    ]
    table = fitted_table("pixelreg bench --density", headers, cells, ["mean", "rmse/bound", "precision"])
    legend = (
        f"pairs within {results['tolerance_px']:g} px; efficiency at {results['pixel_size_nm']:g} nm pixels; "
        "rmse over the pairs, against the bound of a spot alone; models trained on "
        + ", ".join(
            f"{row['trained_on']} spots (for {row['points']})" for row in results["rows"] if row["trained_on"]
        )
    )
    table.caption = legend if table.caption is None else f"{legend}\n{table.caption}"
    return table


def movie_table(results: dict[str, Any]) -> Table:
    """The movie bench: speed and scores of each method on the same frames."""
    cells = [
        [
            name,
            f"{row['frames_per_second']:.2f}",
            f"{row['mpx_per_second']:.2f}",
            shown(row["jaccard"], ".2%"),
            shown(row["rmse_px"], ".4f"),
            shown(row["efficiency"], ".1f"),
        ]
        for name, row in results["methods"].items()
    ]
    table = fitted_table(
        "pixelreg bench --movie",
        ["method", "frames/s", "Mpx/s", "jaccard", "rmse px", "efficiency"],
        cells,
        [],
    )
    legend = (
        f"{results['frames']} frames of {results['size']}x{results['size']}, "
        f"{results['spots_per_frame']:.0f} spots per frame"
    )
    if "speedup" in results:
        trackpy = results["methods"]["trackpy"]
        python = trackpy.get("python_engine_frames_per_second", trackpy["frames_per_second"])
        legend += (
            f"; pixelreg {results['speedup']:.2f}x trackpy's frames/s (its python engine, "
            f"{python:.2f} frames/s, as `pip install trackpy` runs it; goal {results['speedup_goal']:g}x, "
            f"met: {'yes' if results['goal_met'] else 'no'})"
        )
    if "speedup_over_numba" in results:
        legend += f", {results['speedup_over_numba']:.2f}x trackpy with numba's"
    stages = results.get("stages_ms_per_frame")
    if stages:
        legend += "\npixelreg's time per frame: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items())
    table.caption = legend
    return table


def perf_table(results: dict[str, Any]) -> Table:
    """Performance figures as a table that fits."""
    rows = [
        ["generate, images/s", f"{results['generate_images_per_second']:,}"],
        ["numpy argmax, images/s", f"{results['argmax_images_per_second']:,}"],
    ]
    for name, m in results["models"].items():
        rows.append([f"{name}: train, images/s", f"{m['train_images_per_second']:,}"])
        rows.append(
            [f"{name}: inference, 1024 images a call, images/s", f"{m['inference_images_per_second']:,}"]
        )
    seconds = results["default_train_seconds_to_unseen_exact"]
    epochs = results["default_train_epochs_to_unseen_exact"]
    rows.append(
        [
            "default train: seconds to exact on unseen",
            "-" if seconds is None else f"{seconds} (epoch {epochs})",
        ]
    )
    rss = results["train_peak_rss_mb"]
    rows.append([f"train --n {rss['n']:,} --epochs 1: peak RSS, MB", f"{rss['mb']:,}"])
    title = f"pixelreg bench --perf ({results['device']}, {results['threads']} threads)"
    return fitted_table(title, ["measure", "value"], rows, [])


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"pixelreg {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Train neural networks to locate bright points in images, and measure them honestly."""


def _join_size_arguments(argv: list[str]) -> list[str]:
    """Let `--size H W` (two numbers) stand for `--size HxW`, since options take one value."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        joined.append(argv[i])
        if argv[i] == "--size" and i + 2 < len(argv):
            if argv[i + 1].isdigit() and argv[i + 2].isdigit():
                joined.append(f"{argv[i + 1]}x{argv[i + 2]}")
                i += 3
                continue
        i += 1
    return joined


def main() -> None:
    """Console-script entry point."""
    if not os.environ.get("PIXELREG_DEBUG"):
        warnings.simplefilter("ignore")  # library warnings are for developers; users get Error lines
    app(args=_join_size_arguments(sys.argv[1:]), prog_name="pixelreg")


__all__ = ["app", "main"]
