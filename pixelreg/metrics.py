"""Errors in pixels, exact-pixel accuracy, one-to-one matching of points."""

from __future__ import annotations

import itertools
import math
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


def summarize(pred: np.ndarray, true: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """The metrics block M of metrics.json for predictions matched to true points (N, K, 2).

    Pixel errors are per image: the mean Euclidean distance over its K points. `exact` is the
    share of images whose every rounded prediction is the true pixel. `rmse_px` is over every
    point; `rmse_hits_px` only over points found within MATCH_RADIUS_PX, the localisation
    precision of detected spots, to be read beside `recall_1px`.
    """
    n = int(true.shape[0])
    if n == 0:
        keys = ("mse", "mean_px", "median_px", "p95_px", "rmse_px", "rmse_hits_px", "max_px", "exact")
        keys += ("recall_1px", "precision_1px", "missed", "extra")
        return {"n": 0, **dict.fromkeys(keys)}
    pred = pred.astype(np.float64)
    true = true.astype(np.float64)
    distances = np.linalg.norm(pred - true, axis=-1)  # (N, K)
    per_image = distances.mean(1)
    normalized_error = to_normalized(pred, height, width) - to_normalized(true, height, width)
    exact = (pixel_of(pred) == pixel_of(true)).all(axis=(1, 2))
    hits = distances <= MATCH_RADIUS_PX
    return {
        "n": n,
        "mse": as_json_float(np.mean(normalized_error**2)),
        "mean_px": as_json_float(per_image.mean()),
        "median_px": as_json_float(np.median(per_image)),
        "p95_px": as_json_float(np.percentile(per_image, 95)),
        "rmse_px": as_json_float(math.sqrt(np.mean(distances**2))),
        "rmse_hits_px": as_json_float(math.sqrt(np.mean(distances[hits] ** 2))) if hits.any() else None,
        "max_px": as_json_float(distances.max()),
        "exact": as_json_float(exact.mean()),
        "recall_1px": as_json_float(hits.mean()),
        "precision_1px": as_json_float(hits.mean()),
        "missed": int((~hits).sum()),
        "extra": int((~hits).sum()),
    }


def as_json_float(value: float, digits: int = 10) -> float:
    """A plain float rounded for metrics.json: stable text, no numpy scalar."""
    return float(round(float(value), digits))
