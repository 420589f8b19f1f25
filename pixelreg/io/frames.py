"""Reading user images for `predict`: PNG (grey or RGB), .npy arrays and TIFF stacks, as uint8
grey levels (N, H, W), or as a camera's uint16 counts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file
from pixelreg.io.tiff import TIFF_SUFFIXES, tiff_layout, tiff_pages
from pixelreg.limits import require_memory

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, as PIL's "L" mode uses


IMAGE_FORMATS = """PNG (8-bit grey or RGB), .npy arrays or TIFF (.tif, .tiff; single or multi-page,
uint8, uint16 or float32): (H, W) one image, (N, H, W) a stack; .npy also (H, W, 3 or 4) one RGB(A)
image, (N, H, W, 3 or 4) a stack of them. Integers are grey levels 0..255; floats that all lie in
[0, 1] are intensities scaled to 0..255, other floats grey levels. A model trained on camera
images (--photons) reads integer counts 0..65535 (floats are rounded)."""


CHUNK_PIXELS = 2**23  # frames read at once: 8 Mpx, 16 MiB of uint16 (32 frames of 512x512)
# frames localized at once (4 of 512x512): their spots' windows stay in the CPU's caches
LOCALIZE_PIXELS = 2**20


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
    first: int = 0  # the frames read: from `first` up to `last` (None: to the file's end)
    last: int | None = None

    def part(self, first: int, last: int) -> Frames:
        """These frames from `first` up to `last` only: a chunk of a long movie for one worker.
        A part that begins and ends where batches do (`batch_starts`) is read and localized in
        the same batches as the whole file is."""
        if not 0 <= first < last <= self.count:
            raise PixelregError(f"{self.path}: frames {first} to {last} are not among its {self.count}")
        return dataclasses.replace(self, first=first, last=last)

    def batches(self) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, frames) in batches of at most LOCALIZE_PIXELS (one frame at
        the least), from the chunks read at once."""
        step = self._batch_frames()
        for first, chunk in self.chunks():
            for start in range(0, len(chunk), step):
                yield first + start, chunk[start : start + step]

    def batch_starts(self) -> list[int]:
        """The first frame of every batch `batches` gives, and the frame after the last: where a
        part of these frames may begin and end and still be read in the same batches."""
        step = self._batch_frames()
        starts = [first for start, stop in self.spans() for first in range(start, stop, step)]
        return [*starts, self.count if self.last is None else self.last]

    def _batch_frames(self) -> int:
        return max(1, LOCALIZE_PIXELS // (self.height * self.width))

    def spans(self, most_pixels: int = CHUNK_PIXELS) -> Iterator[tuple[int, int]]:
        """(first frame, frame after the last) of consecutive chunks of at most `most_pixels`."""
        per_chunk = max(1, most_pixels // (self.height * self.width))
        last = self.count if self.last is None else self.last
        for start in range(self.first - self.first % per_chunk, last, per_chunk):  # the whole file's
            yield max(start, self.first), min(last, start + per_chunk)

    def chunks(self, most_pixels: int = CHUNK_PIXELS) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, frames (B, H, W)) for consecutive chunks of the file."""
        every = read_images(self.path, self.counts) if self.whole else None
        for start, stop in self.spans(most_pixels):
            if every is not None:
                yield start, every[start:stop]
                continue
            pixels = tiff_pages(self.path, start, stop)
            if self.counts:
                yield start, _counts(pixels, self.path)
            else:
                yield start, _to_grey_levels(pixels, self.path, self._float_scaled, rgb=False)


def open_frames(path: str | Path, counts: bool = False) -> Frames:
    """The frames of an image file, checked, to be read with `Frames.chunks`. A TIFF is opened
    and checked here (pixel type, shape, page chain, its first frame decoded; a float TIFF, or
    one of more than 8 bits read as grey levels, is read once for NaN and its range) and read
    chunk by chunk later; other files are read whole, as `read_images` reads them."""
    path = require_file(path, "image")
    if path.suffix.lower() not in TIFF_SUFFIXES:  # checked now, read again when its turn comes
        count, height, width = read_images(path, counts).shape
        return Frames(path, count, height, width, counts, whole=True)
    shape, dtype = tiff_layout(path)
    count, height, width = (1, *shape) if len(shape) == 2 else shape
    frames = Frames(path, count, height, width, counts)
    if dtype.kind == "f" or (not counts and dtype != np.uint8):  # NaN, or values out of range
        low, high = math.inf, -math.inf
        for start, stop in frames.spans():
            pixels = tiff_pages(path, start, stop)
            low, high = min(low, float(pixels.min())), max(high, float(pixels.max()))
        frames._float_scaled = dtype.kind == "f" and low >= 0 and high <= 1
        extremes = np.array([low, high], dtype)  # checked as the frames will be
        _counts(extremes, path) if counts else _to_grey_levels(
            extremes, path, frames._float_scaled, rgb=False
        )
    else:
        tiff_pages(path, 0, 1)  # decoded now: a codec that is missing here fails before any work
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
    from PIL import Image

    try:
        with Image.open(path) as image:  # 16-bit grey: integers, kept as they are (0..255 or refused)
            if image.mode.startswith("I"):
                return _to_grey_levels(np.asarray(image), path, scaled=False, rgb=False)
        pixels = matplotlib.image.imread(path, format="png")
    except PixelregError:
        raise
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


def _read_tiff(path: Path) -> np.ndarray:
    """The frames (N, H, W) of a single- or multi-page TIFF of one channel."""
    shape, dtype = tiff_layout(path)
    require_memory(3 * math.prod(shape) * dtype.itemsize, f"{path}", "split it into smaller files")
    return tiff_pages(path, 0, 1 if len(shape) == 2 else shape[0])


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


def read_first_frames(paths: Sequence[Path], most: int, side: int) -> np.ndarray:
    """The first frames of the files (ADU, uint16), up to `most` frames, each cropped to its
    central `side` x `side` pixels; every file's frames of one size. Every file is opened and
    checked (`open_frames`) before any frame is read."""
    movies = [open_frames(path, counts=True) for path in paths]
    height, width = movies[0].height, movies[0].width
    for movie in movies[1:]:
        if (movie.height, movie.width) != (height, width):
            raise PixelregError(
                f"{movie.path}: frames of {movie.height}x{movie.width}, but the first file's are {height}x{width}"
            )
    top, left = ((length - min(length, side)) // 2 for length in (height, width))
    taken: list[np.ndarray] = []
    for movie in movies:
        for _, chunk in movie.chunks():
            taken.append(
                np.ascontiguousarray(
                    chunk[: most - sum(map(len, taken)), top : top + side, left : left + side]
                )
            )
            if sum(map(len, taken)) >= most:
                return np.concatenate(taken)
    return np.concatenate(taken)
