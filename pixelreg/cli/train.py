"""`pixelreg train`: train a model into a run directory, or resume one."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pixelreg.cli.app import command, console, emit
from pixelreg.cli.options import (
    AsJson,
    Device,
    Quiet,
    data_option_parameters,
    given_on_command_line,
    make_spec,
    with_data_options,
)
from pixelreg.cli.progress import ConsoleReporter
from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file, require_writable_folder
from pixelreg.io.runs import last_checkpoint_of, next_run_dir
from pixelreg.nn.config import AUTO_MODEL, DEFAULT_LR, MODEL_NAMES, MODEL_SIZES, SIZE_LIMITS, TrainConfig

DEFAULTS = TrainConfig()
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
TrainData = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Dataset .npz from `pixelreg generate`; without it, data is made in memory from the options below.",
    ),
]
Channels = Annotated[
    int | None,
    typer.Option(
        help=f"Feature channels of the heatmap and offsets models ({SIZES_HELP['channels']}).",
        show_default=False,
    ),
]
Depth = Annotated[
    int | None,
    typer.Option(
        help=f"Convolution layers of the heatmap and offsets models ({SIZES_HELP['depth']}).",
        show_default=False,
    ),
]
Stride = Annotated[
    int | None,
    typer.Option(
        help="Offsets model: read the image in cells of STRIDE x STRIDE pixels, 1 or 2 (default 1); "
        "2 runs about four times faster, for movies.",
        show_default=False,
    ),
]
Mirror = Annotated[
    bool | None,
    typer.Option(
        "--mirror/--no-mirror",
        help="Offsets model: read each image with its three mirror images and average (default); "
        "--no-mirror reads it once, four times faster, for movies (validation reads it the same way).",
        show_default=False,
    ),
]
LearningRate = Annotated[
    float | None,
    typer.Option(help=f"Adam learning rate (cosine-decayed); default {LR_HELP}.", show_default=False),
]
RunName = Annotated[
    str | None,
    typer.Option(help="Run name; default: the first free of train, train2, ...", show_default=False),
]
Resume = Annotated[
    Path | None,
    typer.Option(
        help="Continue the run of this last.pt (or run directory), in its directory, with its settings.",
        show_default=False,
    ),
]


@command
@with_data_options()
def train(
    ctx: typer.Context,
    data: TrainData = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = DEFAULTS.model,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per optimisation step.")] = DEFAULTS.batch_size,
    lr: LearningRate = DEFAULTS.lr,
    channels: Channels = None,
    depth: Depth = None,
    stride: Stride = None,
    mirror: Mirror = None,
    device: Device = DEFAULTS.device,
    amp: Annotated[
        bool, typer.Option("--amp", help="Mixed precision (bfloat16 autocast); CUDA only.")
    ] = DEFAULTS.amp,
    out: Annotated[Path, typer.Option(help="Directory that holds runs.")] = Path("runs"),
    name: RunName = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Write into an existing run directory.")
    ] = False,
    resume: Resume = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """Train a model; print the run directory (config, history, best.pt, last.pt) on stdout.

    Under `torchrun --nproc-per-node N -m pixelreg train ...` the processes share every batch
    (DistributedDataParallel) and rank 0 alone writes and prints.

    Example: pixelreg train --epochs 30 --holdout quadrant
    """
    is_main = os.environ.get("RANK", "0") == "0"
    quiet = quiet or not is_main
    if resume is not None:
        refuse_settings_beside_resume(ctx)
        require_file(last_checkpoint_of(resume), "checkpoint")
        config, run_dir = None, resume
    else:
        given = {"channels": channels, "depth": depth, "stride": stride, "mirror": mirror}
        config = TrainConfig(
            model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=spec_options["seed"],
            device=device, data=str(data) if data is not None else None,
            spec=make_spec(spec_options).to_dict() if data is None else {},
            model_args={key: value for key, value in given.items() if value is not None}, amp=amp,
        )  # fmt: skip
        config.validate()
        if data is not None:
            refuse_data_options_beside_data(ctx)
            require_file(data, "dataset")
        if out.exists() and not out.is_dir():
            raise PixelregError(f"cannot create run directory in {out}: it exists and is not a folder")
        require_writable_folder(out)
        # under torchrun only rank 0 picks the run directory; train() hands it to the others
        run_dir = next_run_dir(out, name, exist_ok) if is_main else out
    result = run_training(config, run_dir, quiet, is_main)
    if not quiet:
        if result.already_finished:
            console.print(f"{result.run_dir} already finished all its epochs; nothing to resume.")
        else:
            console.print(
                f"Best epoch {result.best_epoch}: val_mean_px {result.best_val_mean_px:.4f}. Run: {result.run_dir}"
            )
    if is_main:
        emit(result.to_json() if as_json else str(result.run_dir), as_json)


def flag_of(name: str) -> str:
    """A parameter's flag: spec_file -> --spec, batch_size -> --batch-size."""
    return "--spec" if name == "spec_file" else "--" + name.replace("_", "-")


def refuse_data_options_beside_data(ctx: typer.Context) -> None:
    """--data trains on a file's images: data options given beside it would be silently unused."""
    names = {p.name for p in data_option_parameters()} - {"seed"} | {"spec_file"}
    given = [name for name in ctx.params if name in names and given_on_command_line(ctx, name)]
    if given:
        flags = ", ".join(flag_of(name) for name in given)
        raise PixelregError(
            f"--data trains on the images of its file; drop {flags}, which make synthetic data"
        )


def refuse_settings_beside_resume(ctx: typer.Context) -> None:
    """--resume continues with the run's own settings: any other option given is refused."""
    given = [name for name in ctx.params if given_on_command_line(ctx, name)]
    clashing = [name for name in given if name not in ("resume", "quiet", "as_json")]
    if clashing:
        flags = ", ".join(flag_of(name) for name in clashing)
        raise PixelregError(
            f"--resume continues a run with the settings it was started with; drop {flags} (or start a new run)"
        )


def run_training(config: TrainConfig | None, run_dir: Path, quiet: bool, is_main: bool) -> Any:
    """Train `config` into `run_dir` (None: resume the run `run_dir` names), with progress; an
    interruption says how to resume and exits 130."""
    from pixelreg.nn.distributed import leave_torchrun
    from pixelreg.nn.train import TrainingInterrupted, resume, train

    reporter = ConsoleReporter(quiet)
    try:
        result = resume(run_dir, reporter) if config is None else train(config, run_dir, reporter)
        leave_torchrun()
        return result
    except TrainingInterrupted as stop:
        reporter.close()
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
