"""Reading user images for `predict`: PNG (grey or RGB) and .npy arrays, as uint8 (N, H, W)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PixelregError
from .files import require_file

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, as PIL's "L" mode uses


def read_images(path: str | Path) -> np.ndarray:
    """uint8 images (N, H, W) from a .png or .npy file; anything else is a clear error."""
    path = require_file(path, "image")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _read_png(path)[None]
    if suffix == ".npy":
        return _read_npy(path)
    raise PixelregError(f"{path}: unsupported image type {suffix or '(none)'}; give .png or .npy files")


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    try:
        pixels = matplotlib.image.imread(path, format="png")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise PixelregError(f"{path} is not a readable PNG image") from exc
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float64) / 255.0
    if pixels.ndim == 3:
        channels = pixels.shape[2]
        if channels in (3, 4):
            pixels = pixels[..., :3] @ LUMA
        elif channels in (1, 2):
            pixels = pixels[..., 0]
        else:
            raise PixelregError(f"{path}: a PNG with {channels} channels is not supported")
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - corrupt headers raise several types
        raise PixelregError(f"{path} is not a readable .npy array (object arrays are refused)") from exc
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0:
        raise PixelregError(f"{path}: expected an array of shape (H, W) or (N, H, W), got {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "uif":
        raise PixelregError(f"{path}: expected numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise PixelregError(f"{path} contains NaN or infinity")
    if array.min() < 0 or array.max() > 255:
        raise PixelregError(f"{path}: grey levels must lie in 0..255, got {array.min()}..{array.max()}")
    return np.rint(array).astype(np.uint8)
