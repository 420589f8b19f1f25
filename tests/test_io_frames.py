"""TIFF stacks in: read as the .npy path reads the same frames, and damaged ones refused in one line."""

import numpy as np
import pytest
import tifffile

from pixelreg.io.frames import open_frames, read_images


def imwrite(path, stack, **options):
    """A TIFF of grey frames: tifffile takes a stack of 3 or 4 frames for RGB unless told."""
    tifffile.imwrite(path, stack, **{"photometric": "minisblack", **options})


def frames(dtype=np.uint8) -> np.ndarray:
    stack = np.full((3, 16, 16), 10, dtype=dtype)
    for i, (x, y) in enumerate([(3, 4), (8, 11), (12, 2)]):
        stack[i, y, x] = 200
    return stack


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_a_multipage_tiff_predicts_as_the_same_frames_in_npy(run, small_run, tmp_path, dtype):
    stack = frames(dtype)
    imwrite(tmp_path / "movie.tif", stack)
    np.save(tmp_path / "movie.npy", stack.astype(np.uint8))
    from_tiff = run("predict", small_run, tmp_path / "movie.tif").stdout.splitlines()
    from_npy = run("predict", small_run, tmp_path / "movie.npy").stdout.splitlines()
    assert len(from_tiff) == 4 and [r.split(",", 1)[1] for r in from_tiff] == [
        r.split(",", 1)[1] for r in from_npy
    ]


def test_tiff_counts_keep_16_bits(tmp_path):
    stack = (frames(np.uint16) * 300).astype(np.uint16)  # up to 60,000 ADU
    imwrite(tmp_path / "counts.tif", stack)
    imwrite(tmp_path / "one.tif", stack[0])
    assert np.array_equal(read_images(tmp_path / "counts.tif", counts=True), stack)
    assert read_images(tmp_path / "one.tif", counts=True).shape == (1, 16, 16)


def test_damaged_or_odd_tiffs_get_one_error_line(run, small_run, tmp_path):
    imwrite(tmp_path / "whole.tif", frames())
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    planar = np.zeros((3, 16, 16), np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tiff:
        tiff.write(np.zeros((16, 16), np.uint8))
        tiff.write(np.zeros((8, 16), np.uint8))
    imwrite(tmp_path / "five.tif", np.zeros((2, 2, 2, 16, 16), np.uint16))
    nan = frames(np.float32)
    nan[1, 5, 5] = np.nan
    imwrite(tmp_path / "nan.tif", nan)
    imwrite(tmp_path / "double.tif", frames(np.float64), photometric="minisblack")
    for name, words in [
        ("truncated.tif", "is not a readable TIFF"),
        ("rgb.tif", "an RGB TIFF; give frames of one channel"),
        ("planar.tif", "an RGB TIFF; give frames of one channel"),
        ("mixed.tif", "series of different shapes or types"),
        ("five.tif", "give frames (H, W) or a stack (N, H, W)"),
        ("nan.tif", "contains NaN or infinity"),
        ("double.tif", "TIFF pixels must be uint8, uint16 or float32, got float64"),
    ]:
        result = run("predict", small_run, tmp_path / name)
        assert result.exit_code == 1 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {tmp_path / name}") and words in lines[0], (
            result.stderr
        )


def test_a_tiff_written_page_by_page_is_read_whole(run, small_run, tmp_path):
    """Acquisition software often writes each frame as a page (and tifffile a series) of its own."""
    stack = frames()
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tiff:
        for frame in stack:
            tiff.write(frame)
    assert np.array_equal(read_images(tmp_path / "pages.tif"), stack)
    chunks = [chunk for _, chunk in open_frames(tmp_path / "pages.tif").chunks(most_pixels=2 * 16 * 16)]
    assert [chunk.shape for chunk in chunks] == [(2, 16, 16), (1, 16, 16)]  # a last chunk of one frame
    rows = run("predict", small_run, tmp_path / "pages.tif").stdout.splitlines()
    assert [row.split(",")[1] for row in rows[1:]] == ["0", "1", "2"]


def test_out_never_replaces_an_input(run, small_run, tmp_path):
    imwrite(tmp_path / "movie.tif", frames())
    before = (tmp_path / "movie.tif").read_bytes()
    for target in (tmp_path / "movie.tif", small_run / "best.pt"):
        result = run("predict", small_run, tmp_path / "movie.tif", "--out", target)
        assert result.exit_code == 1 and "is one of this command's inputs" in result.stderr
    assert (tmp_path / "movie.tif").read_bytes() == before
