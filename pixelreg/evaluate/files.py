"""What an evaluation writes and reads back: metrics.json and predictions.npz, beside a checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_writable_place, write_atomic, write_text
from pixelreg.io.runs import RunDir


@dataclass
class Evaluation:
    report: dict[str, Any]  # the contents of metrics.json
    predictions: dict[str, np.ndarray]  # the contents of predictions.npz


def save_evaluation(evaluation: Evaluation, out_dir: str | Path) -> tuple[Path, Path]:
    """Write predictions.npz, then metrics.json, into `out_dir` (each atomically).

    The report is serialised first, so that a report that cannot be written (NaN in it)
    leaves neither file; metrics.json comes last, so it only exists beside its predictions.
    """
    out = RunDir(out_dir)
    if out.root.exists() and not out.root.is_dir():
        raise PixelregError(
            f"--out {out.root} is not a folder; give one for metrics.json and predictions.npz"
        )
    require_writable_place(out.metrics)  # both refused before either is written
    require_writable_place(out.predictions)
    try:
        text = json.dumps(evaluation.report, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise PixelregError("the evaluation holds NaN or infinity, so nothing was written") from None

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **evaluation.predictions)  # type: ignore[arg-type]  # numpy's stub

    predictions_path = write_atomic(out.predictions, write)
    return write_text(out.metrics, text), predictions_path


PREDICTION_KEYS = ("index", "images", "true", "pred", "error_px", "seen", "train_mask")


def load_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Read a predictions.npz written by `save_evaluation`; anything else is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise PixelregError(f"{path} not found; run `pixelreg evaluate` first")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same answer
        raise PixelregError(
            f"{path} is not a readable predictions file; run `pixelreg evaluate` again"
        ) from exc
    missing = [key for key in PREDICTION_KEYS if key not in arrays]
    n = len(arrays.get("true", ()))
    shapes_fit = not missing and arrays["images"].ndim == 3 and arrays["true"].ndim == 3
    shapes_fit = shapes_fit and all(
        len(arrays[key]) == n for key in ("index", "images", "pred", "error_px", "seen")
    )
    counting = "confidence" in arrays  # any number of detections per image, padded with NaN
    pred_fits = (
        arrays["pred"].ndim == 3 and arrays["confidence"].shape == arrays["pred"].shape[:2]
        if counting and not missing
        else not missing and arrays["pred"].shape == arrays["true"].shape
    )
    if missing or not shapes_fit or arrays["train_mask"].ndim != 2 or not pred_fits:
        raise PixelregError(f"{path} is not a predictions file of pixelreg; run `pixelreg evaluate` again")
    return arrays
