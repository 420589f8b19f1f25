"""Where points fall: the positions each split may use (holdouts) and the points drawn there."""

from __future__ import annotations

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.simulate.spec import SPLITS, DataSpec
from pixelreg.simulate.streams import random_stream

# --- positions and splits ------------------------------------------------------------------


def split_positions(spec: DataSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Flat pixel indices (y * W + x) each split may draw from.

    `random` and `quadrant` keep train, val and test positions disjoint, so that evaluation
    measures positions the model never saw; `none` lets every split use every position.
    """
    height, width = spec.size
    every = np.arange(height * width)
    if spec.holdout == "none":
        return {"train": every, "val": every, "test": every}
    if spec.holdout == "random":
        held = rng.permutation(every)
        n_val = _share(spec.val_fraction, every.size)
        n_test = _share(spec.test_fraction, every.size)
    else:  # quadrant: train never sees the bottom-right quadrant
        ys, xs = np.divmod(every, width)
        in_quadrant = (xs >= width // 2) & (ys >= height // 2)
        quadrant = rng.permutation(every[in_quadrant])
        outside = every[~in_quadrant]
        total = spec.val_fraction + spec.test_fraction
        n_val = round(quadrant.size * spec.val_fraction / total) if total > 0 else 0
        n_test = quadrant.size - n_val if total > 0 else 0
        held = np.concatenate([quadrant, rng.permutation(outside)])
        if total == 0:
            return {"train": outside, "val": held[:0], "test": held[:0]}
    val, test = held[:n_val], held[n_val : n_val + n_test]
    train = np.sort(held[n_val + n_test :])
    return {"train": train, "val": np.sort(val), "test": np.sort(test)}


def _share(fraction: float, total: int) -> int:
    return max(1, round(fraction * total)) if fraction > 0 else 0


def split_counts(spec: DataSpec) -> dict[str, int]:
    """How many images each split gets."""
    n_val = round(spec.val_fraction * spec.n)
    n_test = round(spec.test_fraction * spec.n)
    return {"train": spec.n - n_val - n_test, "val": n_val, "test": n_test}


def sample_points(pool: np.ndarray, count: int, spec: DataSpec, rng: np.random.Generator) -> np.ndarray:
    """(count, K, 2) points whose pixels come from `pool`, at least `min_distance` apart.

    With a variable count each image draws its number of points uniformly from
    [points, points_max]; the rows past it are NaN.
    """
    k = spec.most_points
    points = _draw(pool, (count, k), spec, rng)
    absent = None
    if spec.variable_count:
        counts = rng.integers(spec.points, spec.most_points + 1, size=count)
        absent = np.arange(k)[None, :] >= counts[:, None]
        points[absent] = np.nan
    if k > 1 and spec.min_distance > 0:
        for _ in range(1000):
            bad = _too_close(points, spec.min_distance)
            if not bad.any():
                break
            points[bad] = _draw(pool, (int(bad.sum()), k), spec, rng)
            if absent is not None:
                points[absent] = np.nan
        else:
            raise PixelregError("could not place the points apart; lower --min-distance")
    return points


def _draw(pool: np.ndarray, shape: tuple[int, int], spec: DataSpec, rng: np.random.Generator):
    cells = rng.choice(pool, size=shape)
    ys, xs = np.divmod(cells, spec.width)
    points = np.stack([xs, ys], axis=-1).astype(np.float64)
    if spec.subpixel:  # uniform over the part of the pixel that lies within [0, size - 1]
        limit = np.array([spec.width - 1, spec.height - 1], dtype=np.float64)
        low, high = np.maximum(points - 0.5, 0.0), np.minimum(points + 0.5, limit)
        points = low + rng.uniform(size=points.shape) * (high - low)
    return points.astype(np.float32)


def _too_close(points: np.ndarray, min_distance: float) -> np.ndarray:
    diff = points[:, :, None, :] - points[:, None, :, :]
    dist = np.sqrt((diff**2).sum(-1))  # NaN (an absent point) is never too close
    k = points.shape[1]
    dist[:, np.arange(k), np.arange(k)] = np.inf
    return (dist < min_distance).any(axis=(1, 2))


def make_points(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """The true points (N, K, 2) and split labels (N,) of the dataset `spec` describes."""
    rng = random_stream(spec.seed, "positions")
    pools = split_positions(spec, rng)
    counts = split_counts(spec)
    parts, labels = [], []
    for name in SPLITS:
        if counts[name] == 0:
            continue
        if pools[name].size == 0:
            raise PixelregError(
                f"the {name} split has {counts[name]} images but no positions to draw from; "
                "raise --val-fraction/--test-fraction or use a larger --size"
            )
        parts.append(sample_points(pools[name], counts[name], spec, rng))
        labels.append(np.full(counts[name], name))
    return np.concatenate(parts), np.concatenate(labels).astype("<U5")
