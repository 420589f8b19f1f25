"""Metrics: errors in pixels, exact-pixel accuracy, pixel locking, detection scores (Jaccard,
recall, precision, efficiency) and the choice of a confidence threshold."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixelreg.evaluate.matching import (
    EFFICIENCY_ALPHA,
    MATCH_RADIUS_PX,
    PIXEL_SIZE_NM,
    TOLERANCE_PX,
    candidate_pairs,
    nearest_other,
    pair_candidates,
    pair_greedy,
    pairs_of,
)
from pixelreg.simulate.coords import pixel_of, to_normalized

PHASE_BINS = 10  # bins of the true sub-pixel position, per axis, for the bias
DETECTION_KEYS = ("tp", "fp", "fn", "recall", "precision", "f1", "jaccard", "efficiency")


def detection_scores(
    pred: np.ndarray,
    true: np.ndarray,
    tolerance: float = TOLERANCE_PX,
    pixel_size: float = PIXEL_SIZE_NM,
    paired: np.ndarray | None = None,
) -> dict[str, Any]:
    """TP, FP, FN, recall, precision, F1, Jaccard index and efficiency of predictions
    (N, Kp, 2) against truths (N, Kt, 2), both padded with NaN; undefined ratios are None."""
    paired = pair_greedy(pred, true, tolerance) if paired is None else paired
    tp = int((paired >= 0).sum())
    fn = int(np.isfinite(true[..., 0]).sum()) - tp
    fp = int(np.isfinite(pred[..., 0]).sum()) - tp
    rows, cols = np.nonzero(paired >= 0)
    distances = np.linalg.norm(pred[rows, paired[rows, cols]] - true[rows, cols], axis=-1)
    jaccard = _ratio(tp, tp + fp + fn)
    rmse_nm = rms(distances * pixel_size)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "recall": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "jaccard": jaccard,
        "efficiency": efficiency(jaccard, rmse_nm),
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


CONFIDENCE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # a model's: 0.05 to 0.95


def keep_above(points: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Detections (N, M, 2) with those scored below `threshold` turned to NaN padding."""
    return np.where((scores >= threshold)[..., None], points, np.nan)


def threshold_sweep(
    points: np.ndarray,
    scores: np.ndarray,
    true: np.ndarray,
    thresholds: tuple[float, ...] | np.ndarray,
    tolerance: float = TOLERANCE_PX,
) -> dict[str, list[Any]]:
    """Recall, precision and Jaccard index of the detections scored at least each threshold:
    the precision-recall curve, from which the threshold is chosen."""
    sweep: dict[str, list[Any]] = {"threshold": [], "recall": [], "precision": [], "jaccard": []}
    candidates = candidate_pairs(points, true, tolerance)  # once: a threshold only drops some
    for threshold in thresholds:
        kept = keep_above(points, scores, threshold)
        chosen = np.isfinite(kept[candidates[0], candidates[1], 0])
        paired = pair_candidates(
            tuple(column[chosen] for column in candidates), points.shape[1], true.shape[:2]
        )
        scores_at = detection_scores(kept, true, tolerance, paired=paired)
        sweep["threshold"].append(as_json_float(threshold))
        for key in ("recall", "precision", "jaccard"):
            value = scores_at[key]
            sweep[key].append(None if value is None else as_json_float(value))
    return sweep


def best_threshold(sweep: dict[str, list[Any]]) -> float:
    """The threshold of a sweep with the highest Jaccard index; among equals the middle one,
    farthest from the thresholds that do worse."""
    jaccard = np.array([-1.0 if value is None else value for value in sweep["jaccard"]])
    best = np.flatnonzero(jaccard == jaccard.max())
    return float(sweep["threshold"][int(best[len(best) // 2])])


def score_thresholds(scores: np.ndarray, count: int = 24) -> np.ndarray:
    """Thresholds for a classical detector's scores (any unit): quantiles of the scores seen,
    and as many evenly spaced from the least to the greatest, since quantiles alone leave the
    gap between the many scores of noise and the few of spots untried."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return np.zeros(1)
    quantiles = np.quantile(finite, np.linspace(0.0, 0.995, count))
    return np.unique(np.concatenate([quantiles, np.linspace(finite.min(), finite.max(), count)]))


SEPARATION_EDGES = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)  # px: bins of the distance to the nearest other spot


def recall_by_separation(
    pred: np.ndarray,
    true: np.ndarray,
    tolerance: float = TOLERANCE_PX,
    edges: tuple[float, ...] = SEPARATION_EDGES,
) -> dict[str, list[Any]]:
    """The share of true points paired, binned by their distance to the nearest other true
    point (the last bin open-ended): where spots overlap, this is where they are lost."""
    found = (pair_greedy(pred, true, tolerance) >= 0).ravel()
    nearest = nearest_other(true).ravel()
    present = np.isfinite(true[..., 0]).ravel()
    bins = np.digitize(nearest[present], edges[1:])  # 0 .. len(edges) - 1
    table: dict[str, list[Any]] = {"truths": [], "recall": []}
    for b in range(len(edges)):
        inside = bins == b
        table["truths"].append(int(inside.sum()))
        table["recall"].append(as_json_float(found[present][inside].mean()) if inside.any() else None)
    return table


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


def rms(values: np.ndarray) -> float | None:
    """The root mean square; None of no values."""
    return math.sqrt(np.mean(np.square(values))) if np.size(values) else None


def efficiency(jaccard: float | None, rmse_nm: float | None, alpha: float = EFFICIENCY_ALPHA) -> float | None:
    """The SMLM challenge's efficiency, E = 100 - sqrt((100 - JI)^2 + alpha^2 rmse^2), of a
    Jaccard index in [0, 1] and an rmse in nm (alpha in % per nm); None where either is."""
    if jaccard is None or rmse_nm is None:
        return None
    return 100.0 - math.hypot(100.0 - 100.0 * jaccard, alpha * rmse_nm)


# Every metric of a block M in metrics.json: its name and how it is read from the errors.
MEASURES: dict[str, Callable[[Errors], float | None]] = {
    "mse": lambda e: np.mean(e.normalized**2),  # normalised coordinates, as training optimises
    "mean_px": lambda e: e.per_image.mean(),  # an image's error: the mean over its points
    "median_px": lambda e: np.median(e.per_image),
    "p95_px": lambda e: np.percentile(e.per_image, 95),
    "rmse_px": lambda e: rms(e.distances),  # over every point
    "rmse_hits_px": lambda e: rms(e.distances[e.hits]),  # over points found within 1 px
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


def summarize(
    pred: np.ndarray,
    true: np.ndarray,
    height: int,
    width: int,
    variable: bool = False,
    tolerance: float = TOLERANCE_PX,
    pixel_size: float = PIXEL_SIZE_NM,
) -> dict[str, Any]:
    """The metrics block M of metrics.json for predictions matched to true points (N, K, 2).

    `rmse_hits_px` is the localisation precision of the spots found, to be read beside
    `recall_1px`; `bias_px` the worst mean error, over the found spots, in any bin of their
    true sub-pixel phase. The detection keys (`DETECTION_KEYS`) come from greedy pairing within
    `tolerance`. With a `variable` count (arrays padded with NaN, predictions in any number)
    every error is taken over the pairs, and `mse` and `exact`, which need every point of an
    image, are None. A group without images has `n` 0 and every metric None.
    """
    n = int(true.shape[0])
    if n == 0:
        return {"n": 0, **dict.fromkeys(MEASURES), **dict.fromkeys(DETECTION_KEYS)}
    pred, true = pred.astype(np.float64), true.astype(np.float64)
    paired = pair_greedy(pred, true, tolerance)
    detection = detection_scores(pred, true, tolerance, pixel_size, paired)
    if variable:
        pair_pred, pair_true = pairs_of(pred, true, paired)
        block = _summarize_matched(pair_pred, pair_true, height, width)
        truths = int(np.isfinite(true[..., 0]).sum())
        hits = int((np.linalg.norm(pair_pred - pair_true, axis=-1) <= MATCH_RADIUS_PX).sum())
        block.update(mse=None, exact=None, recall_1px=_ratio(hits, truths))
    else:
        block = _summarize_matched(pred, true, height, width)
    rounded = {k: v if v is None or isinstance(v, int) else as_json_float(v) for k, v in detection.items()}
    return {"n": n, **block, **rounded}


def _summarize_matched(pred: np.ndarray, true: np.ndarray, height: int, width: int) -> dict[str, Any]:
    """The MEASURES of predictions matched one to one with truths (N, K, 2)."""
    if true.shape[0] == 0:
        return dict.fromkeys(MEASURES)
    errors = Errors(
        distances=np.linalg.norm(pred - true, axis=-1),
        normalized=to_normalized(pred, height, width) - to_normalized(true, height, width),
        exact=(pixel_of(pred) == pixel_of(true)).all(axis=(1, 2)),
        signed=pred - true,
        true=true,
    )
    values = {name: measure(errors) for name, measure in MEASURES.items()}
    return {name: None if v is None else as_json_float(v) for name, v in values.items()}


def as_json_float(value: float, digits: int = 10) -> float:
    """A plain float rounded for metrics.json: stable text, no numpy scalar."""
    return float(round(float(value), digits))
