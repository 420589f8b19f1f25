"""`pixelreg evaluate`: score a checkpoint on held-out data and write metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pixelreg.cli.app import command, console, emit
from pixelreg.cli.options import AsJson, CheckpointArg, Device, Quiet, Threshold
from pixelreg.cli.tables import metrics_table, photometry_table
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM, TOLERANCE_PX, Scoring
from pixelreg.io.checkpoint_header import ModelHeader, check_data_kind, check_values
from pixelreg.io.datasets import dataset_header
from pixelreg.io.files import require_file, require_writable_place
from pixelreg.io.runs import resolve_checkpoint
from pixelreg.simulate.spec import SPLITS


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

    Example: pixelreg evaluate runs/train --json
    """
    scoring = Scoring(tolerance, pixel_size, threshold)
    if split not in (*SPLITS, "all"):
        raise PixelregError(f"--split must be one of {', '.join(SPLITS)}, all; got {split!r}")
    # Every option, path and file header is checked before torch is imported
    check_values(threshold, device=device)
    checkpoint = require_file(resolve_checkpoint(checkpoint), "checkpoint")
    header = ModelHeader.read(checkpoint)
    header.check_settings(threshold, device=device)
    if data is not None:
        images = dataset_header(data)["images"]
        check_data_kind(header.camera is not None, images[1] == np.uint16, str(data))
    if out is not None and out.exists() and not out.is_dir():
        raise PixelregError(f"--out {out} is not a folder; give one for metrics.json and predictions.npz")
    for name in ("metrics.json", "predictions.npz"):
        require_writable_place((out if out is not None else checkpoint.parent) / name)

    from pixelreg.evaluate.files import save_evaluation
    from pixelreg.evaluate.report import evaluate as run_evaluation

    evaluation = run_evaluation(checkpoint, data, split, device, scoring=scoring)
    tables = [metrics_table(evaluation.report)]  # made before anything is written
    if "photometry" in evaluation.report:
        tables.append(photometry_table(evaluation.report["photometry"]))
    metrics_path, _ = save_evaluation(evaluation, out if out is not None else checkpoint.parent)
    if not quiet:
        for table in tables:
            console.print(table)
    emit(evaluation.report if as_json else str(metrics_path), as_json)
