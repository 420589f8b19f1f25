"""TIFF stacks, checked before a frame is used: their layout, their page chain and where their
pixels lie, so that a damaged file is an error and never a shorter movie.

A TIFF is a chain of pages (image file directories, IFDs), each pointing to the next and to its
pixels. A file cut short, or with a page that points back into the chain, can still open: a
reader that follows the chain as far as it goes sees fewer frames than were written. Here the
chain is walked to its end, every link and every page's pixels must lie inside the file, and
every frame the layout promises must be read.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from pixelreg.errors import PixelregError

TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_DTYPES = (np.uint8, np.uint16, np.float32)
DATA_TAGS = {273: 279, 324: 325}  # StripOffsets: StripByteCounts, TileOffsets: TileByteCounts
MOST_STRIPS = 2**20  # strips or tiles of one page: a frame of 2**20 rows at the most
INTEGER_TYPES = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q", 8: "h", 9: "i", 17: "q"}  # (S)SHORT, (S)LONG, ...


@dataclass(frozen=True)
class PageChain:
    """What walking a TIFF's pages found: how many, and where the last page's pixels end."""

    pages: int
    data_end: int  # the byte after the last pixel of any page (0 where not read)


def walk_pages(path: Path, read_extents: bool = True) -> PageChain:
    """Follow a TIFF's chain of pages to its end; raise where a link points outside the file or
    back into the chain, or (with `read_extents`) a page's pixels run past the file's end."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            raise PixelregError(f"{path} is not a readable TIFF (no TIFF header)")
        big = struct.unpack(order + "H", head[2:4])[0] == 43  # BigTIFF: 64-bit offsets
        link, count, entry = ("Q", "Q", 20) if big else ("I", "H", 12)
        offset = struct.unpack(order + link, head[8:16] if big else head[4:8])[0]
        seen: set[int] = set()
        data_end = 0
        while offset:
            page = len(seen) + 1
            if offset in seen:
                raise PixelregError(
                    f"{path} is not a readable TIFF (page {page} points back into its chain of pages)"
                )
            if offset + struct.calcsize(count) > size:
                raise PixelregError(
                    f"{path} is not a readable TIFF (truncated: page {page}'s header lies past its end, "
                    f"after {page - 1} pages)"
                )
            seen.add(offset)
            stream.seek(offset)
            entries = struct.unpack(order + count, stream.read(struct.calcsize(count)))[0]
            table = stream.read(entries * entry + struct.calcsize(link))
            if len(table) < entries * entry + struct.calcsize(link):
                raise PixelregError(f"{path} is not a readable TIFF (truncated in page {page}'s header)")
            if read_extents:
                data_end = max(data_end, _page_data_end(stream, order, big, table[: entries * entry]))
            offset = struct.unpack(order + link, table[entries * entry :])[0]
    if data_end > size:
        raise PixelregError(f"{path} is not a readable TIFF (truncated: its pixels run past its end)")
    return PageChain(len(seen), data_end)


def _page_data_end(stream: IO[bytes], order: str, big: bool, table: bytes) -> int:
    """Where a page's pixels end: the farthest strip or tile offset plus its byte count."""
    entry, number_form, value_at = (20, "Q", 12) if big else (12, "I", 8)  # value_at: its value field
    inline = entry - value_at  # a field's values lie in it where they fit, else where it points
    values: dict[int, tuple[int, ...]] = {}
    for start in range(0, len(table), entry):
        tag, kind = struct.unpack(order + "HH", table[start : start + 4])
        if tag not in (*DATA_TAGS, *DATA_TAGS.values()) or kind not in INTEGER_TYPES:
            continue
        number = struct.unpack(order + number_form, table[start + 4 : start + value_at])[0]
        if number > MOST_STRIPS:
            return 2**63  # no frame has so many strips: a damaged page
        form = order + INTEGER_TYPES[kind] * number
        field = table[start + value_at : start + entry]
        if struct.calcsize(form) > inline:
            stream.seek(struct.unpack(order + number_form, field)[0])
            field = stream.read(struct.calcsize(form))
            if len(field) < struct.calcsize(form):
                return 2**63  # the list of offsets itself lies past the end
        values[tag] = struct.unpack(form, field[: struct.calcsize(form)])
    pairs = [
        (offset, length)
        for offsets, lengths in DATA_TAGS.items()
        for offset, length in zip(values.get(offsets, ()), values.get(lengths, ()), strict=False)
    ]
    if any(offset < 0 or length < 0 for offset, length in pairs):
        return 2**63  # a signed offset or count below 0: a damaged page
    return max((offset + length for offset, length in pairs), default=0)


@contextmanager
def tiff_errors(path: Path) -> Iterator[None]:
    """A damaged TIFF, whatever tifffile raises for it, as one clear line; tifffile's own log
    lines are kept from the terminal (the checks here say what matters of them)."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
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


def tiff_layout(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape, (H, W) or (N, H, W), and pixel type of a TIFF's frames, checked: its first
    series, or its pages where each page is a series of its own (as a TIFF written page by
    page is), which must then all be frames of one size and type. Its chain of pages is walked
    (`walk_pages`), and the frames must all lie in the file: one block of pixels, or a page each."""
    import tifffile

    with tiff_errors(path), tifffile.TiffFile(path) as tiff:
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
        if 0 in shape:
            raise PixelregError(f"{path}: the TIFF of shape {shape} holds no pixels")
        block = series.dataoffset is not None and len(tiff.series) == 1  # the frames one block
        chain = walk_pages(path, read_extents=not block)
        frames = 1 if len(shape) == 2 else shape[0]
        if block and int(series.dataoffset) + int(series.nbytes) > path.stat().st_size:
            raise PixelregError(f"{path} is not a readable TIFF (truncated: its pixels run past its end)")
        if not block and chain.pages < frames:
            raise PixelregError(
                f"{path} is not a readable TIFF (its {chain.pages} pages cannot hold the {frames} frames it declares)"
            )
    return shape, dtype


def tiff_pages(path: Path, start: int, stop: int) -> np.ndarray:
    """Frames start..stop-1 (B, H, W) of a TIFF, every one of them, checked for NaN."""
    import tifffile

    with tiff_errors(path), tifffile.TiffFile(path) as tiff:
        if len(tiff.series) > 1:  # a series a page: the pages are the frames
            frames = tiff.asarray(key=slice(start, stop))
        elif len(tiff.series[0].shape) == 2:
            frames = tiff.series[0].asarray()
        else:
            frames = tiff.asarray(key=slice(start, stop), series=0)
    frames = frames[None] if frames.ndim == 2 else frames  # a chunk of one frame
    if len(frames) != stop - start:
        raise PixelregError(
            f"{path} is not a readable TIFF (frames {start} to {stop - 1} were asked for, {len(frames)} read)"
        )
    if frames.dtype.kind == "f" and not np.isfinite(frames).all():
        raise PixelregError(f"{path} contains NaN or infinity")
    return frames
