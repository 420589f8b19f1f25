"""Reading user images for `predict`: PNG (grey or RGB), .npy arrays and TIFF stacks, as uint8
grey levels (N, H, W), or as a camera's uint16 counts."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file
from pixelreg.limits import require_memory

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, as PIL's "L" mode uses


IMAGE_FORMATS = """PNG (8-bit grey or RGB), .npy arrays or TIFF (.tif, .tiff; single or multi-page,
uint8, uint16 or float32): (H, W) one image, (N, H, W) a stack; .npy also (H, W, 3 or 4) one RGB(A)
image, (N, H, W, 3 or 4) a stack of them. Integers are grey levels 0..255; floats that all lie in
[0, 1] are intensities scaled to 0..255, other floats grey levels. A model trained on camera
images (--photons) reads integer counts 0..65535 (floats are rounded)."""


CHUNK_PIXELS = 2**23  # frames read at once: 8 Mpx, 16 MiB of uint16 (32 frames of 512x512)


@dataclass
class Frames:
    """The frames of one image file, read a chunk at a time so that memory stays flat in the
    movie's length: TIFF stacks page by page, other files whole (when their turn comes)."""

    path: Path
    count: int  # frames in the file
    height: int
    width: int
    counts: bool  # a camera's uint16 ADU rather than uint8 grey levels
    whole: bool = False  # a file read whole (not a TIFF)
    _float_scaled: bool = False  # float TIFF pixels are intensities in [0, 1] (from a first pass)

    def batches(self, most_pixels: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, frames) in batches of at most `most_pixels` (one frame at
        the least), from the chunks read at once."""
        step = max(1, most_pixels // (self.height * self.width))
        for first, chunk in self.chunks():
            for start in range(0, len(chunk), step):
                yield first + start, chunk[start : start + step]

    def spans(self, most_pixels: int = CHUNK_PIXELS) -> Iterator[tuple[int, int]]:
        """(first frame, frame after the last) of consecutive chunks of at most `most_pixels`."""
        per_chunk = max(1, most_pixels // (self.height * self.width))
        for start in range(0, self.count, per_chunk):
            yield start, min(self.count, start + per_chunk)

    def chunks(self, most_pixels: int = CHUNK_PIXELS) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, frames (B, H, W)) for consecutive chunks of the file."""
        every = read_images(self.path, self.counts) if self.whole else None
        for start, stop in self.spans(most_pixels):
            if every is not None:
                yield start, every[start:stop]
                continue
            pixels = _tiff_pages(self.path, start, stop)
            if self.counts:
                yield start, _counts(pixels, self.path)
            else:
                yield start, _to_grey_levels(pixels, self.path, self._float_scaled, rgb=False)


def open_frames(path: str | Path, counts: bool = False) -> Frames:
    """The frames of an image file, checked, to be read with `Frames.chunks`. A TIFF is opened
    and checked here (pixel type, shape; a float TIFF is read once for NaN and its range) and
    read chunk by chunk later; other files are read whole, as `read_images` reads them."""
    path = require_file(path, "image")
    if path.suffix.lower() not in TIFF_SUFFIXES:  # checked now, read again when its turn comes
        count, height, width = read_images(path, counts).shape
        return Frames(path, count, height, width, counts, whole=True)
    shape, dtype = _tiff_layout(path)
    count, height, width = (1, *shape) if len(shape) == 2 else shape
    frames = Frames(path, count, height, width, counts)
    if dtype.kind == "f":
        low, high = math.inf, -math.inf
        for start, stop in frames.spans():
            pixels = _tiff_pages(path, start, stop)
            low, high = min(low, float(pixels.min())), max(high, float(pixels.max()))
        frames._float_scaled = low >= 0 and high <= 1
    return frames


def read_images(path: str | Path, counts: bool = False) -> np.ndarray:
    """uint8 images (N, H, W) from a .png or .npy file; anything else is a clear error. With
    `counts`: a camera's uint16 ADU, from integer .npy arrays."""
    path = require_file(path, "image")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        frames = _read_tiff(path)
        return _counts(frames, path) if counts else _to_grey_levels(frames, path, _scaled(frames), rgb=False)
    if counts:
        return _read_counts(path)
    if suffix == ".png":
        return _read_png(path)[None]
    if suffix == ".npy":
        return _read_npy(path)
    raise PixelregError(f"{path}: unsupported image type {suffix or '(none)'}; give .png, .npy or .tif files")


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


TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_DTYPES = (np.uint8, np.uint16, np.float32)


def _read_tiff(path: Path) -> np.ndarray:
    """The frames (N, H, W) of a single- or multi-page TIFF of one channel."""
    shape, dtype = _tiff_layout(path)
    require_memory(3 * math.prod(shape) * dtype.itemsize, f"{path}", "split it into smaller files")
    return _tiff_pages(path, 0, 1 if len(shape) == 2 else shape[0])


@contextmanager
def _tiff_errors(path: Path) -> Iterator[None]:
    """A damaged TIFF, whatever tifffile raises or logs for it, as one clear line."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # its own warnings would be a second line
    try:
        yield
    except PixelregError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged TIFF raises many types
        raise PixelregError(
            f"{path} is not a readable TIFF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    finally:
        logger.setLevel(level)


def _tiff_layout(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape, (H, W) or (N, H, W), and pixel type of a TIFF's frames, checked: its first
    series, or its pages where each page is a series of its own (as a TIFF written page by
    page is), which must then all be frames of one size and type."""
    import tifffile

    with _tiff_errors(path), tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        if len(tiff.series) > 1:
            kinds = {(tuple(s.shape), np.dtype(s.dtype)) for s in tiff.series}
            if len(kinds) > 1 or len(shape) != 2:
                raise PixelregError(
                    f"{path}: a TIFF of {len(tiff.series)} series of different shapes or types; "
                    "give frames of one size"
                )
            shape = (len(tiff.series), *shape)
        if dtype not in TIFF_DTYPES:
            raise PixelregError(f"{path}: TIFF pixels must be uint8, uint16 or float32, got {dtype}")
        if "S" in series.axes:  # samples per pixel: colour, contiguous or planar
            raise PixelregError(f"{path}: an RGB TIFF; give frames of one channel")
        if len(shape) not in (2, 3):
            raise PixelregError(
                f"{path}: a TIFF of shape {shape} (axes {series.axes}); give frames (H, W) or a stack (N, H, W)"
            )
        if 0 not in shape and _data_end(tiff.series[-1]) > path.stat().st_size:  # now, before any row
            raise PixelregError(f"{path} is not a readable TIFF (truncated: its pixels run past its end)")
    if 0 in shape:
        raise PixelregError(f"{path}: the TIFF of shape {shape} holds no pixels")
    return shape, dtype


def _data_end(series: Any) -> int:
    """Where the pixels of a TIFF series end in its file: of the whole series where it is one
    block, else of its last page."""
    if series.dataoffset is not None:
        return int(series.dataoffset) + int(series.nbytes)
    page = series.pages[-1] if len(series.pages) else None
    if page is None or not page.dataoffsets:
        return 0
    return max(int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=True))


def _tiff_pages(path: Path, start: int, stop: int) -> np.ndarray:
    """Frames start..stop-1 (B, H, W) of a TIFF, checked for NaN."""
    import tifffile

    with _tiff_errors(path), tifffile.TiffFile(path) as tiff:
        if len(tiff.series) > 1:  # a series a page: the pages are the frames
            frames = tiff.asarray(key=slice(start, stop))
        elif len(tiff.series[0].shape) == 2:
            frames = tiff.series[0].asarray()
        else:
            frames = tiff.asarray(key=slice(start, stop), series=0)
    frames = frames[None] if frames.ndim == 2 else frames  # a chunk of one frame
    if frames.dtype.kind == "f" and not np.isfinite(frames).all():
        raise PixelregError(f"{path} contains NaN or infinity")
    return frames


def _scaled(pixels: np.ndarray) -> bool:
    """Whether float pixels are intensities in [0, 1] rather than grey levels."""
    return pixels.dtype.kind == "f" and pixels.min() >= 0 and pixels.max() <= 1


def _read_counts(path: Path) -> np.ndarray:
    """A camera's ADU: integers 0..65535 of shape (H, W) or (N, H, W), from a .npy file."""
    if path.suffix.lower() != ".npy":
        raise PixelregError(
            f"{path}: camera counts (16-bit ADU) are read from .npy or TIFF files, not {path.suffix or 'a file without a suffix'}"
        )
    array = _open_npy(path)
    if array.dtype.kind not in "ui":
        raise PixelregError(f"{path}: a camera's counts are integers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise PixelregError(f"{path}: expected counts of shape (H, W) or (N, H, W), got {array.shape}")
    require_memory(3 * array.size * 2, f"{path}", "split it into smaller files")
    return _counts(np.array(array), path)


def _counts(frames: np.ndarray, path: Path) -> np.ndarray:
    """uint16 counts from integer or float frames (floats rounded), each 0..65535."""
    if frames.min() < 0 or frames.max() > 65535:
        raise PixelregError(f"{path}: counts must lie in 0..65535, got {frames.min()}..{frames.max()}")
    return np.rint(frames).astype(np.uint16) if frames.dtype.kind == "f" else frames.astype(np.uint16)


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
    return _to_grey_levels(array, path, _scaled(array), rgb)


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
