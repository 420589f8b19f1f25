"""Reading user images for `predict`: PNG (grey or RGB) and .npy arrays, as uint8 (N, H, W)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PixelregError
from .files import require_file
from .limits import require_memory

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, as PIL's "L" mode uses


IMAGE_FORMATS = """PNG (8-bit grey or RGB) or .npy arrays: (H, W) one image, (N, H, W) a stack,
(H, W, 3 or 4) one RGB(A) image, (N, H, W, 3 or 4) a stack of them. Integers are grey levels
0..255; floats that all lie in [0, 1] are intensities scaled to 0..255, other floats grey levels."""


def read_images(path: str | Path, counts: bool = False) -> np.ndarray:
    """uint8 images (N, H, W) from a .png or .npy file; anything else is a clear error. With
    `counts`: a camera's uint16 ADU, from integer .npy arrays."""
    path = require_file(path, "image")
    suffix = path.suffix.lower()
    if counts:
        return _read_counts(path)
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
        if channels in (1, 2):
            pixels = pixels[..., 0]
        elif channels not in (3, 4):
            raise PixelregError(f"{path}: a PNG with {channels} channels is not supported")
    return _to_grey_levels(pixels, path, scaled=True, rgb=pixels.ndim == 3)


def _read_counts(path: Path) -> np.ndarray:
    """A camera's ADU: integers 0..65535 of shape (H, W) or (N, H, W), from a .npy file."""
    if path.suffix.lower() != ".npy":
        raise PixelregError(f"{path}: a model of the camera model reads 16-bit counts from .npy files")
    array = _open_npy(path)
    if array.dtype.kind not in "ui":
        raise PixelregError(f"{path}: a camera's counts are integers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise PixelregError(f"{path}: expected counts of shape (H, W) or (N, H, W), got {array.shape}")
    require_memory(3 * array.size * 2, f"{path}", "split it into smaller files")
    array = np.array(array)
    if array.min() < 0 or array.max() > 65535:
        raise PixelregError(f"{path}: counts must lie in 0..65535, got {array.min()}..{array.max()}")
    return array.astype(np.uint16)


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")  # the header only, until read
    except Exception as exc:  # noqa: BLE001 - corrupt headers raise several types
        raise PixelregError(
            f"{path} is not a readable .npy array (truncated, corrupt, or holding Python objects)"
        ) from exc


def _read_npy(path: Path) -> np.ndarray:
    array = _open_npy(path)
    if array.dtype.kind not in "uif":
        raise PixelregError(f"{path}: expected numbers, got dtype {array.dtype}")
    rgb = bool(array.ndim in (3, 4) and array.shape[-1] in (3, 4))
    if array.ndim - rgb == 2:
        array = array[None]
    if array.ndim - rgb != 3:
        raise PixelregError(f"{path}: expected an array of shape (H, W) or (N, H, W), got {array.shape}")
    if 0 in array.shape:
        raise PixelregError(f"{path}: the array of shape {array.shape} holds no pixels")
    require_memory(array.nbytes + 9 * array.size, f"{path}", "split it into smaller files")
    array = np.array(array)  # read it now, into writable memory
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PixelregError(f"{path} contains NaN or infinity")
    scaled = array.dtype.kind == "f" and array.min() >= 0 and array.max() <= 1
    return _to_grey_levels(array, path, scaled, rgb)


def _to_grey_levels(pixels: np.ndarray, path: Path, scaled: bool, rgb: bool) -> np.ndarray:
    """uint8 grey levels from grey or (`rgb`) RGB(A) pixels; `scaled`: intensities in [0, 1]."""
    if rgb:
        pixels = pixels[..., :3] @ LUMA
    if pixels.dtype == np.uint8:
        return pixels
    if scaled:
        pixels = pixels * 255.0
    if pixels.min() < 0 or pixels.max() > 255:
        raise PixelregError(f"{path}: grey levels must lie in 0..255, got {pixels.min()}..{pixels.max()}")
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
