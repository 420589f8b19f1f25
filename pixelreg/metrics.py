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
}


def summarize(pred: np.ndarray, true: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """The metrics block M of metrics.json for predictions matched to true points (N, K, 2).

    `rmse_hits_px` is the localisation precision of the spots found, to be read beside
    `recall_1px`. A group without images has `n` 0 and every metric None.
    """
    n = int(true.shape[0])
    if n == 0:
        return {"n": 0, **dict.fromkeys(MEASURES)}
    pred, true = pred.astype(np.float64), true.astype(np.float64)
    errors = Errors(
        distances=np.linalg.norm(pred - true, axis=-1),
        normalized=to_normalized(pred, height, width) - to_normalized(true, height, width),
        exact=(pixel_of(pred) == pixel_of(true)).all(axis=(1, 2)),
    )
    values = {name: measure(errors) for name, measure in MEASURES.items()}
    return {"n": n, **{name: None if v is None else as_json_float(v) for name, v in values.items()}}


def as_json_float(value: float, digits: int = 10) -> float:
    """A plain float rounded for metrics.json: stable text, no numpy scalar."""
    return float(round(float(value), digits))
