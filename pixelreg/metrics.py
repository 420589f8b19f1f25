"""Errors in pixels, exact-pixel accuracy, one-to-one matching of points."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import pixel_of, to_normalized

MATCH_RADIUS_PX = 1.0  # a prediction within this distance of a true point counts as a hit
PHASE_BINS = 10  # bins of the true sub-pixel position, per axis, for the bias


def match_points(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Reorder each image's predictions to the assignment with the least total distance.

    pred, true: (N, K, 2). Returns pred reordered so that pred[:, j] pairs with true[:, j].
    Exact (all permutations) for K <= 7, which covers every practical number of spots here.
    """
    n, k, _ = true.shape
    if k == 1:
        return pred
    if k > 7:
        raise ValueError("matching is exact for up to 7 points per image")
    cost = np.linalg.norm(pred[:, :, None, :] - true[:, None, :, :], axis=-1)  # (N, Kp, Kt)
    perms = np.array(list(itertools.permutations(range(k))))  # (P, K): pred index for true j
    totals = cost[:, perms, np.arange(k)].sum(-1)  # (N, P)
    best = perms[totals.argmin(1)]  # (N, K)
    return np.take_along_axis(pred, best[:, :, None], axis=1)


@dataclass
class Errors:
    """The errors of predictions matched to true points (N, K, 2), from which each metric is read."""

    distances: np.ndarray  # (N, K) Euclidean error of each point, px
    normalized: np.ndarray  # (N, K, 2) error in normalised coordinates
    exact: np.ndarray  # (N,) bool: every point of the image rounds to its true pixel
    signed: np.ndarray  # (N, K, 2) prediction minus truth, px
    true: np.ndarray  # (N, K, 2) true points, px

    @property
    def per_image(self) -> np.ndarray:
        return self.distances.mean(1)

    @property
    def hits(self) -> np.ndarray:
        return self.distances <= MATCH_RADIUS_PX


def _rms(values: np.ndarray) -> float | None:
    return math.sqrt(np.mean(values**2)) if values.size else None


# Every metric of a block M in metrics.json: its name and how it is read from the errors.
MEASURES: dict[str, Callable[[Errors], float | None]] = {
    "mse": lambda e: np.mean(e.normalized**2),  # normalised coordinates, as training optimises
    "mean_px": lambda e: e.per_image.mean(),  # an image's error: the mean over its points
    "median_px": lambda e: np.median(e.per_image),
    "p95_px": lambda e: np.percentile(e.per_image, 95),
    "rmse_px": lambda e: _rms(e.distances),  # over every point
    "rmse_hits_px": lambda e: _rms(e.distances[e.hits]),  # over points found within 1 px
    "max_px": lambda e: e.distances.max(),
    "exact": lambda e: e.exact.mean(),  # share of images with every point on its true pixel
    "recall_1px": lambda e: e.hits.mean(),  # share of true points found within 1 px
    "bias_px": lambda e: _worst(phase_bias(e.true[e.hits], e.signed[e.hits])),  # pixel locking
}


def points_by_method(predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The matched points of the model ("model") and of each classical baseline, by name, from
    the arrays of an evaluation (predictions.npz: `pred`, `baseline_<name>`)."""
    methods = {"model": predictions["pred"]}
    methods.update(
        {key.removeprefix("baseline_"): v for key, v in predictions.items() if key.startswith("baseline_")}
    )
    return methods


def phase_of(points: np.ndarray) -> np.ndarray:
    """Sub-pixel phase of each coordinate: its offset from the nearest pixel centre, in [-0.5, 0.5)."""
    points = np.asarray(points, dtype=np.float64)
    return points - np.floor(points + 0.5)


def phase_bias(true: np.ndarray, signed: np.ndarray, bins: int = PHASE_BINS) -> np.ndarray:
    """(2, bins): mean signed error of x and y in each bin of the true coordinate's phase.

    An unbiased localizer has zeros throughout; one that pulls spots towards pixel centres
    (pixel locking) is positive left of centre and negative right of it. Empty bins are NaN.
    """
    return _phase_binned(true, signed, bins)[0]


def phase_bias_error(true: np.ndarray, signed: np.ndarray, bins: int = PHASE_BINS) -> np.ndarray:
    """(2, bins): the standard error of each mean in `phase_bias`, so that noise is not read as bias."""
    return _phase_binned(true, signed, bins)[1]


def _phase_binned(true: np.ndarray, signed: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    phase = phase_of(true).reshape(-1, 2)
    signed = np.asarray(signed, dtype=np.float64).reshape(-1, 2)
    which = np.clip(((phase + 0.5) * bins).astype(np.int64), 0, bins - 1)
    mean, error = np.full((2, bins), np.nan), np.full((2, bins), np.nan)
    for axis in (0, 1):
        counts = np.bincount(which[:, axis], minlength=bins)
        sums = np.bincount(which[:, axis], weights=signed[:, axis], minlength=bins)
        squares = np.bincount(which[:, axis], weights=signed[:, axis] ** 2, minlength=bins)
        safe = np.maximum(counts, 1)
        mean[axis] = np.where(counts > 0, sums / safe, np.nan)
        variance = np.maximum(squares / safe - (sums / safe) ** 2, 0.0)
        error[axis] = np.where(counts > 1, np.sqrt(variance / np.maximum(counts - 1, 1)), np.nan)
    return mean, error


def phase_centres(bins: int = PHASE_BINS) -> list[float]:
    """The phase at the middle of each bin of `phase_bias`."""
    return [round(-0.5 + (i + 0.5) / bins, 6) for i in range(bins)]


def _worst(bias: np.ndarray) -> float | None:
    finite = np.abs(bias[np.isfinite(bias)])
    return float(finite.max()) if finite.size else None


def summarize(pred: np.ndarray, true: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """The metrics block M of metrics.json for predictions matched to true points (N, K, 2).

    `rmse_hits_px` is the localisation precision of the spots found, to be read beside
    `recall_1px`; `bias_px` the worst mean error, over the found spots, in any bin of their
    true sub-pixel phase. A group without images has `n` 0 and every metric None.
    """
    n = int(true.shape[0])
    if n == 0:
        return {"n": 0, **dict.fromkeys(MEASURES)}
    pred, true = pred.astype(np.float64), true.astype(np.float64)
    errors = Errors(
        distances=np.linalg.norm(pred - true, axis=-1),
        normalized=to_normalized(pred, height, width) - to_normalized(true, height, width),
        exact=(pixel_of(pred) == pixel_of(true)).all(axis=(1, 2)),
        signed=pred - true,
        true=true,
    )
    values = {name: measure(errors) for name, measure in MEASURES.items()}
    return {"n": n, **{name: None if v is None else as_json_float(v) for name, v in values.items()}}


def as_json_float(value: float, digits: int = 10) -> float:
    """A plain float rounded for metrics.json: stable text, no numpy scalar."""
    return float(round(float(value), digits))
