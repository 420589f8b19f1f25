"""Pairing predictions with true points: the SMLM challenge's greedy pairing within a tolerance,
and one-to-one matching for a fixed number of points."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from pixelreg.errors import PixelregError

MATCH_RADIUS_PX = 1.0  # a prediction within this distance of a true point counts as a hit
# The SMLM challenge 2016 (Sage et al. 2019): a prediction pairs with a truth within 250 nm,
# 2.5 px at 100 nm pixels; efficiency weighs 1 nm of rmse like 1 point of Jaccard index.
TOLERANCE_PX = 2.5
AXIAL_TOLERANCE_NM = 500.0  # in 3D, a pair's depths differ by this much at most
AXIAL_ALPHA = 0.5  # % per nm: the efficiency's weight of axial rmse
PIXEL_SIZE_NM = 100.0
EFFICIENCY_ALPHA = 1.0  # % per nm
PAIRING_CHUNK = 256  # images paired at once: (chunk, predictions, truths) distances in memory


@dataclass(frozen=True)
class Scoring:
    """How detections are scored (the SMLM challenge's way): pairs within `tolerance` px,
    rmse in nm at `pixel_size` for the efficiency, and the confidence `threshold` of a
    counting model (None: the one chosen on validation, stored in the checkpoint)."""

    tolerance: float = TOLERANCE_PX
    pixel_size: float = PIXEL_SIZE_NM
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not (self.tolerance > 0 and math.isfinite(self.tolerance)):
            raise PixelregError(
                f"tolerance must be a distance above 0 px, got {self.tolerance:g}", ("tolerance",)
            )
        if not (self.pixel_size > 0 and math.isfinite(self.pixel_size)):
            raise PixelregError(f"pixel_size must be above 0 nm, got {self.pixel_size:g}", ("pixel_size",))
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise PixelregError(f"threshold must be in [0, 1], got {self.threshold:g}", ("threshold",))


def pair_greedy(
    pred: np.ndarray,
    true: np.ndarray,
    tolerance: float = TOLERANCE_PX,
    depths: tuple[np.ndarray, np.ndarray] | None = None,
    axial: float = AXIAL_TOLERANCE_NM,
) -> np.ndarray:
    """(N, Kt) int: for each truth, the index of the prediction paired with it, or -1.

    As the SMLM challenge pairs: per image, the globally smallest distance first, each
    prediction and truth used once, only within `tolerance`. pred (N, Kp, 2) and true
    (N, Kt, 2) may be padded with NaN. In 3D, `depths` (predicted (N, Kp), true (N, Kt), nm):
    a pair's depths also differ by `axial` nm at most. Computed in rounds that accept every
    pair that is the nearest of both its prediction and its truth, which is what the
    one-by-one greedy accepts (`_pair_in_rounds`).
    """
    return pair_candidates(
        candidate_pairs(pred, true, tolerance, depths, axial), pred.shape[1], true.shape[:2]
    )


def pair_candidates(candidates: tuple[np.ndarray, ...], kp: int, shape: tuple[int, ...]) -> np.ndarray:
    """`pair_greedy` of its `candidates` (`candidate_pairs`), predictions `kp` an image, truths
    of `shape` (N, Kt): a sweep of thresholds finds the candidates once and pairs each subset."""
    paired = np.full(shape, -1, dtype=np.int64)
    _pair_in_rounds(candidates, kp, paired)
    return paired


def candidate_pairs(
    pred: np.ndarray,
    true: np.ndarray,
    tolerance: float = TOLERANCE_PX,
    depths: tuple[np.ndarray, np.ndarray] | None = None,
    axial: float = AXIAL_TOLERANCE_NM,
) -> tuple[np.ndarray, ...]:
    """Every (prediction, truth) of an image that may pair (`pair_greedy`'s arguments): their
    image, prediction and truth indices and their distance (C,) each, in (image, prediction,
    truth) order. A few per truth: the pairing then works on these alone."""
    parts = []
    for start in range(0, len(true), PAIRING_CHUNK):
        p = np.asarray(pred[start : start + PAIRING_CHUNK], dtype=np.float64)
        t = np.asarray(true[start : start + PAIRING_CHUNK], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            dist = np.linalg.norm(p[:, :, None, :] - t[:, None, :, :], axis=-1)  # (n, Kp, Kt)
            near = dist <= tolerance  # NaN (padding) fails the test
            if depths is not None:
                pz = np.asarray(depths[0][start : start + PAIRING_CHUNK], dtype=np.float64)
                tz = np.asarray(depths[1][start : start + PAIRING_CHUNK], dtype=np.float64)
                near &= np.abs(pz[:, :, None] - tz[:, None, :]) <= axial
        image, index, truth = np.nonzero(near)
        parts.append((image + start, index, truth, dist[image, index, truth]))
    if not parts:
        return tuple(np.zeros(0, dtype=kind) for kind in (np.int64, np.int64, np.int64, np.float64))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def _pair_in_rounds(candidates: tuple[np.ndarray, ...], kp: int, out: np.ndarray) -> None:
    """`pair_greedy`'s rounds on its `candidates` (`candidate_pairs`) of predictions of `kp` an
    image, written into `out` (n, Kt): each round accepts every candidate that is the nearest
    left of both its prediction and its truth (of ties, a prediction's first truth, then a
    truth's first prediction), and retires their other candidates. Each round costs what is left."""
    n, kt = out.shape
    image, pred, truth, gap = candidates
    by_pred, by_truth = image * kp + pred, image * kt + truth
    left = np.arange(len(gap))
    while len(left):
        nearest_of_pred = np.full(n * kp, np.inf)
        nearest_of_truth = np.full(n * kt, np.inf)
        np.minimum.at(nearest_of_pred, by_pred[left], gap[left])
        np.minimum.at(nearest_of_truth, by_truth[left], gap[left])
        nearest = (gap[left] == nearest_of_pred[by_pred[left]]) & (
            gap[left] == nearest_of_truth[by_truth[left]]
        )
        mutual = left[nearest]
        mutual = mutual[np.unique(by_pred[mutual], return_index=True)[1]]  # a prediction's first truth
        mutual = mutual[np.lexsort((pred[mutual], by_truth[mutual]))]
        mutual = mutual[np.unique(by_truth[mutual], return_index=True)[1]]  # a truth's first prediction
        out[image[mutual], truth[mutual]] = pred[mutual]
        used_pred = np.zeros(n * kp, dtype=bool)
        used_truth = np.zeros(n * kt, dtype=bool)
        used_pred[by_pred[mutual]] = used_truth[by_truth[mutual]] = True
        left = left[~used_pred[by_pred[left]] & ~used_truth[by_truth[left]]]


def nearest_other(true: np.ndarray) -> np.ndarray:
    """(N, K): each true point's distance to the nearest other point of its image (inf if alone;
    NaN for padding)."""
    with np.errstate(invalid="ignore"):
        gap = np.linalg.norm(true[:, :, None, :] - true[:, None, :, :], axis=-1)
    k = true.shape[1]
    gap[:, np.arange(k), np.arange(k)] = np.inf
    nearest = np.where(np.isnan(gap), np.inf, gap).min(-1, initial=np.inf)
    return np.where(np.isnan(true[..., 0]), np.nan, nearest)


def pairs_of(pred: np.ndarray, true: np.ndarray, paired: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paired (prediction, truth) points as two (P, 1, 2) arrays, one pair per row."""
    rows, cols = np.nonzero(paired >= 0)
    return pred[rows, paired[rows, cols]][:, None, :], true[rows, cols][:, None, :]


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
