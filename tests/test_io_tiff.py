"""TIFF stacks as every common writer lays them out: read whole when intact, refused when cut short
or when a page points back into the chain, never read as a shorter movie."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from pixelreg.errors import PixelregError
from pixelreg.io.frames import open_frames
from pixelreg.io.tiff import walk_pages

MOVIE = (np.random.default_rng(0).poisson(50, (60, 32, 32)) + 100).astype(np.uint16)


def write_shaped(path: Path, movie: np.ndarray) -> None:
    """tifffile's default: the frames one block, the pages' headers after it."""
    tifffile.imwrite(path, movie)


def write_plain(path: Path, movie: np.ndarray) -> None:
    """tifffile without metadata: a page's header, then its pixels, page after page."""
    tifffile.imwrite(path, movie, metadata=None)


def write_pages(path: Path, movie: np.ndarray) -> None:
    """tifffile writing page by page, as a camera's software appends frames."""
    with tifffile.TiffWriter(path) as writer:
        for frame in movie:
            writer.write(frame, metadata=None, contiguous=False)


def write_pil(path: Path, movie: np.ndarray) -> None:
    """Pillow: each page's pixels, then its header."""
    frames = [Image.fromarray(frame) for frame in movie]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def write_bigtiff(path: Path, movie: np.ndarray) -> None:
    """BigTIFF, with 64-bit offsets, page by page."""
    tifffile.imwrite(path, movie, bigtiff=True, metadata=None)


WRITERS = [write_shaped, write_plain, write_pages, write_pil, write_bigtiff]


def read_all(path: Path) -> np.ndarray:
    movie = open_frames(path, counts=True)
    return np.concatenate([chunk for _, chunk in movie.chunks()])


@pytest.mark.parametrize("write", WRITERS)
def test_an_intact_stack_is_read_whole(tmp_path, write):
    write(tmp_path / "movie.tif", MOVIE)
    np.testing.assert_array_equal(read_all(tmp_path / "movie.tif"), MOVIE)
    assert walk_pages(tmp_path / "movie.tif").pages == len(MOVIE)


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("kept", [0.99, 0.9, 0.5])
def test_a_stack_cut_short_is_an_error_not_a_shorter_movie(tmp_path, write, kept):
    write(tmp_path / "whole.tif", MOVIE)
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(PixelregError, match="cut.tif is not a readable TIFF"):
        read_all(tmp_path / "cut.tif")


@pytest.mark.parametrize("target", ["itself", "the first page"])
def test_a_page_that_points_back_into_the_chain_is_an_error(tmp_path, target):
    write_pil(tmp_path / "loop.tif", MOVIE[:5])
    data = bytearray((tmp_path / "loop.tif").read_bytes())
    first = struct.unpack("<I", data[4:8])[0]
    page = first
    if target == "the first page":  # the second page's link goes back to the first
        entries = struct.unpack("<H", data[first : first + 2])[0]
        page = struct.unpack("<I", data[first + 2 + 12 * entries : first + 6 + 12 * entries])[0]
    entries = struct.unpack("<H", data[page : page + 2])[0]
    data[page + 2 + 12 * entries : page + 6 + 12 * entries] = struct.pack("<I", first)
    (tmp_path / "loop.tif").write_bytes(bytes(data))
    with pytest.raises(PixelregError, match="points back into its chain of pages"):
        read_all(tmp_path / "loop.tif")


def test_grey_levels_over_255_are_refused_when_the_file_is_opened(tmp_path):
    movie = np.zeros((40, 16, 16), np.uint16)
    movie[-1, 3, 3] = 300  # in the last frame: found before any frame is handed out
    tifffile.imwrite(tmp_path / "deep.tif", movie)
    with pytest.raises(PixelregError, match=r"grey levels must lie in 0\.\.255, got 0\.\.300"):
        open_frames(tmp_path / "deep.tif", counts=False)
    assert open_frames(tmp_path / "deep.tif", counts=True).count == 40  # as counts, it is fine


def test_a_codec_that_is_not_here_is_refused_when_the_file_is_opened(tmp_path):
    pytest.importorskip("PIL")
    frames = [Image.fromarray(np.full((16, 16), 7, np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "lzw.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    try:
        import imagecodecs  # noqa: F401 - with it, LZW is readable and the check has nothing to refuse
    except ImportError:
        with pytest.raises(PixelregError, match="lzw.tif is not a readable TIFF.*imagecodecs"):
            open_frames(tmp_path / "lzw.tif")
    else:
        assert open_frames(tmp_path / "lzw.tif").count == 3


def test_a_page_whose_signed_offset_points_past_the_end_is_refused_at_open(tmp_path):
    write_pages(tmp_path / "movie.tif", MOVIE[:5])
    data = bytearray((tmp_path / "movie.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "movie.tif") as tiff:
        tag = tiff.pages[-1].tags["StripOffsets"]
    entry = tag.offset  # the tag's 12 bytes: code, type, count, value
    data[entry + 2 : entry + 4] = struct.pack("<H", 9)  # SLONG
    data[entry + 8 : entry + 12] = struct.pack("<i", len(data) + 5000)
    (tmp_path / "movie.tif").write_bytes(bytes(data))
    with pytest.raises(PixelregError, match="truncated: its pixels run past its end"):
        open_frames(tmp_path / "movie.tif", counts=True)


@pytest.mark.parametrize(("top", "kept"), [(200, True), (60000, False)])
def test_a_16_bit_png_is_grey_levels_only_up_to_255(tmp_path, top, kept):
    pixels = np.zeros((16, 16), np.uint16)
    pixels[5, 7] = top
    Image.fromarray(pixels).save(tmp_path / "frame.png")
    if kept:
        np.testing.assert_array_equal(open_frames(tmp_path / "frame.png").chunks().__next__()[1][0], pixels)
    else:
        with pytest.raises(PixelregError, match=r"grey levels must lie in 0\.\.255, got 0\.\.60000"):
            open_frames(tmp_path / "frame.png")
