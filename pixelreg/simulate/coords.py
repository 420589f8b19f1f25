"""Coordinates: the one place where pixel and normalised coordinates meet, and points to pixels.

`x` is the column, `y` the row; pixel centres lie on integer coordinates, so an image spans
[-0.5, W - 0.5]. Points have shape (N, K, 2) in the order (x, y), NaN rows padding a variable count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# --- the one place where pixel and normalised coordinates meet ---------------------------


def to_normalized(points: Any, height: int, width: int) -> Any:
    """Pixel (x, y) -> normalised (u, v) = (x / (W - 1), y / (H - 1)); numpy or torch."""
    return points / _scale_like(points, height, width)


def from_normalized(uv: Any, height: int, width: int) -> Any:
    """Normalised (u, v) -> pixel (x, y); the inverse of `to_normalized`."""
    return uv * _scale_like(uv, height, width)


def _scale_like(array: Any, height: int, width: int) -> Any:
    if hasattr(array, "new_tensor"):  # a torch tensor (this module never imports torch itself)
        return array.new_tensor([width - 1, height - 1])
    return np.asarray([width - 1, height - 1], dtype=np.asarray(array).dtype)


def point_counts(points: np.ndarray) -> np.ndarray:
    """(N,) int: the points of each image in an (N, K, 2) array padded with NaN."""
    return np.isfinite(points[..., 0]).sum(1)


def present_points(points: np.ndarray) -> np.ndarray:
    """(M, 2): every point of an (N, K, 2) array, the NaN padding left out."""
    flat = np.asarray(points).reshape(-1, 2)
    return flat[np.isfinite(flat[:, 0])]


def position_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool marking the pixels that the given points fall in."""
    mask = np.zeros((height, width), dtype=bool)
    cells = pixel_of(present_points(points))
    mask[np.clip(cells[:, 1], 0, height - 1), np.clip(cells[:, 0], 0, width - 1)] = True
    return mask


def pixel_of(points: np.ndarray) -> np.ndarray:
    """The integer (x, y) of the pixel each point falls in (round half away from zero)."""
    return np.floor(np.asarray(points, dtype=np.float64) + 0.5).astype(np.int64)
