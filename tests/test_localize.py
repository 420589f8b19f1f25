"""Movies in, localization tables out: streamed TIFF frames, tiles without seams, pixelreg's and
ThunderSTORM's tables, the super-resolution plot, and `bench movie` end to end."""

from __future__ import annotations

import csv
import io
import math

import h5py
import numpy as np
import pytest
import tifffile
import torch
import yaml

import pixelreg.nn.inference as inference
from pixelreg.fit.background import background_level
from pixelreg.io.checkpoints import load_model
from pixelreg.io.frames import open_frames
from pixelreg.io.locs import COLUMNS, Localizations
from pixelreg.io.picasso import PICASSO_FIELDS
from pixelreg.io.tables import THUNDERSTORM_COLUMNS, TableWriter, read_table
from pixelreg.nn.registry import build_model
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import DataSpec


def spots_frame(spots: list[tuple[int, int]], height: int = 40, width: int = 56) -> np.ndarray:
    """A grey-level frame with a 3x3 spot centred on each (x, y): where argmax puts them."""
    frame = np.full((height, width), 20, dtype=np.uint8)
    for x, y in spots:
        frame[y - 1 : y + 2, x - 1 : x + 2] = [[40, 60, 40], [60, 120, 60], [40, 60, 40]]
    return frame


def test_frames_stream_in_chunks_that_make_the_whole_movie(tmp_path):
    stack = (np.random.default_rng(0).random((40, 30, 20)) * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.tif", stack)
    frames = open_frames(tmp_path / "movie.tif", counts=True)
    chunks = list(frames.chunks(most_pixels=30 * 20 * 7))
    assert [start for start, _ in chunks] == list(range(0, 40, 7))
    assert max(len(chunk) for _, chunk in chunks) == 7  # never more than asked for at once
    assert np.array_equal(np.concatenate([chunk for _, chunk in chunks]), stack)
    # a float movie in [0, 1] is scaled as a whole, whichever chunk holds its brightest pixel
    floats = np.zeros((6, 8, 8), dtype=np.float32)
    floats[5, 2, 3] = 1.0
    floats[0, 4, 4] = 0.5
    tifffile.imwrite(tmp_path / "floats.tif", floats)
    grey = np.concatenate([c for _, c in open_frames(tmp_path / "floats.tif").chunks(most_pixels=64)])
    assert grey[5, 2, 3] == 255 and grey[0, 4, 4] == 128


def test_float32_frames_given_are_left_as_they_are():
    frames = np.full((2, 8, 8), 51.0, dtype=np.float32)
    grey = inference.images_to_tensor(frames)
    photons = inference.images_to_tensor(frames, camera=Camera(baseline=1.0, e_per_adu=5.0))
    assert (frames == 51.0).all()  # the model's input is a new tensor, not the caller's array changed
    assert torch.allclose(grey, torch.full((2, 1, 8, 8), 0.2))
    assert torch.allclose(photons, torch.full((2, 1, 8, 8), 250.0 / inference.PHOTON_SCALE))


def test_tiles_find_what_the_whole_frame_finds(counting_run, monkeypatch):
    """A frame read in tiles of a few pixels gives the detections of the frame read whole: no
    spot lost or doubled on a border, none moved."""
    model, _ = load_model(counting_run / "best.pt")
    spec = DataSpec(n=2, height=90, width=70, points=30, points_max=40, blur=1.0, noise=3.0,
                    background=20.0, brightness=400.0, subpixel=True, holdout="none",
                    val_fraction=0.0, test_fraction=0.0)  # fmt: skip
    images = make_dataset(spec).images
    whole = inference.detect_images(model, images)
    monkeypatch.setattr(inference, "NETWORK_TILE", 16)
    tiled = inference.detect_images(model, images)
    for n in range(len(images)):
        a = whole[0][n][whole[1][n] > 0.3]
        b = tiled[0][n][tiled[1][n] > 0.3]
        assert len(a) == len(b) > 10
        gap = np.linalg.norm(a[:, None] - b[None], axis=-1)
        assert gap.min(0).max() < 1e-3 and gap.min(1).max() < 1e-3


def test_predict_writes_both_tables_atomically_and_frames_number_on(run, counting_run, tmp_path):
    frame = spots_frame([(8, 9), (30, 20), (47, 33)])
    tifffile.imwrite(tmp_path / "a.tif", np.stack([frame, frame]))
    tifffile.imwrite(tmp_path / "b.tif", frame)
    stdout = run("predict", counting_run, tmp_path / "a.tif")
    assert stdout.exit_code == 0, stdout.stderr
    written = run("predict", counting_run, tmp_path / "a.tif", "--out", tmp_path / "locs.csv", "--quiet")
    assert written.exit_code == 0 and written.stdout.strip() == str(tmp_path / "locs.csv")
    assert (tmp_path / "locs.csv").read_text() == stdout.stdout
    rows = list(csv.DictReader(io.StringIO(stdout.stdout)))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 6
    assert sorted((round(float(r["x"])), round(float(r["y"]))) for r in rows if r["index"] == "1") == [
        (8, 9), (30, 20), (47, 33)
    ]  # fmt: skip
    assert all(r["photons"] == r["background"] == r["uncertainty"] == "" for r in rows)  # grey levels
    storm = run("predict", counting_run, tmp_path / "a.tif", tmp_path / "b.tif", "--format", "thunderstorm",
                "--pixel-size", 160, "--out", tmp_path / "storm.csv")  # fmt: skip
    assert storm.exit_code == 0, storm.stderr
    lines = (tmp_path / "storm.csv").read_text().splitlines()
    assert lines[0] == ",".join(f'"{name}"' for name in THUNDERSTORM_COLUMNS)
    table = [dict(zip(THUNDERSTORM_COLUMNS, line.split(","), strict=True)) for line in lines[1:]]
    assert [int(r["id"]) for r in table] == list(range(1, 10))
    assert sorted({int(r["frame"]) for r in table}) == [1, 2, 3]  # b.tif's frame follows a.tif's two
    first = rows[0]
    assert float(table[0]["x [nm]"]) == pytest.approx((float(first["x"]) + 0.5) * 160, abs=1e-3)
    assert float(table[0]["sigma [nm]"]) == pytest.approx(160.0)
    back = read_table(tmp_path / "storm.csv", pixel_size=160)  # read back in pixels
    assert back["x"][0] == pytest.approx(float(first["x"]), abs=1e-4) and back["frame"].max() == 2
    picasso = run("predict", counting_run, tmp_path / "a.tif", tmp_path / "b.tif", "--format", "picasso",
                  "--pixel-size", 160, "--out", tmp_path / "locs.hdf5")  # fmt: skip
    assert picasso.exit_code == 0, picasso.stderr
    assert picasso.stdout.split() == [str(tmp_path / "locs.hdf5"), str(tmp_path / "locs.yaml")]
    with h5py.File(tmp_path / "locs.hdf5") as stream:
        locs = stream["locs"][...]
    assert locs.dtype == np.dtype([*PICASSO_FIELDS, ("confidence", "f4")])  # Picasso's, then pixelreg's
    assert locs["frame"].tolist() == [int(r["frame"]) - 1 for r in table]  # 0-based, numbered on
    assert np.allclose(locs["x"], [float(r["x [nm]"]) / 160 - 0.5 for r in table], atol=1e-4)
    assert np.allclose(locs["sx"], 1.0) and np.allclose(locs["sy"], 1.0)  # the spec's sigma, px
    info = list(yaml.safe_load_all((tmp_path / "locs.yaml").read_text()))
    assert (info[0]["Width"], info[0]["Height"], info[0]["Frames"]) == (frame.shape[1], frame.shape[0], 3)
    assert info[1]["Pixelsize"] == 160
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.tif", "b.tif", "locs.csv", "locs.hdf5", "locs.yaml", "storm.csv"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", "--out", "{tmp}/x.csv"], "--json prints the rows on stdout"),
        (["--pixel-size", "100"], "--pixel-size applies with --format thunderstorm or picasso only"),
        (["--format", "xml"], "--format must be one of csv, thunderstorm, picasso"),
        (["--format", "picasso"], "give --out NAME.hdf5"),
        (["--format", "picasso", "--out", "{tmp}/x.csv"], "give --out a .hdf5 name"),
        (["--format", "thunderstorm", "--pixel-size", "0"], "--pixel-size must be 1 to 1e6 nm"),
        (["--out", "{tmp}"], "it exists and is a directory"),
        (["--out", "{tmp}/locs.csv/deeper.csv"], "cannot write"),
    ],
)
def test_impossible_table_options_get_one_error_line(run, counting_run, tmp_path, args, message):
    tifffile.imwrite(tmp_path / "a.tif", spots_frame([(8, 9)]))
    (tmp_path / "locs.csv").write_text("a file where a folder should be\n")
    before = sorted(tmp_path.iterdir())
    result = run("predict", counting_run, tmp_path / "a.tif", *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert sorted(tmp_path.iterdir()) == before  # nothing half-written left behind


def test_a_frame_smaller_than_the_field_of_view_is_refused(run, counting_run, tmp_path):
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((3, 4), dtype=np.uint8))
    result = run("predict", counting_run, tmp_path / "tiny.tif")
    assert result.exit_code == 1
    assert "smaller than this model's field of view" in result.stderr and result.stderr.count("\n") == 1


def test_plot_draws_a_table_from_predict_and_refuses_what_is_not_one(run, counting_run, tmp_path):
    frame = spots_frame([(8, 9), (30, 20), (47, 33)])
    tifffile.imwrite(tmp_path / "a.tif", np.stack([frame] * 3), photometric="minisblack")
    assert run("predict", counting_run, tmp_path / "a.tif", "--out", tmp_path / "locs.csv").exit_code == 0
    result = run("plot", tmp_path / "locs.csv", "--zoom", 4)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "locs.png")
    assert (tmp_path / "locs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    result = run("plot", tmp_path / "other.csv")
    assert result.exit_code == 1 and "is not a localization table" in result.stderr
    result = run("plot", tmp_path / "locs.csv", "--zoom", 0)
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")
    result = run("plot", counting_run, "--zoom", 4)
    assert result.exit_code == 1 and "applies to a localization table" in result.stderr
    table = (tmp_path / "locs.csv").read_bytes()
    for out in (tmp_path / "locs.csv", tmp_path / "a.pdf"):  # the figure is a PNG, never the table
        result = run("plot", tmp_path / "locs.csv", "--out", out)
        assert result.exit_code == 1 and "give a .png file" in result.stderr
    assert (tmp_path / "locs.csv").read_bytes() == table
    # a table saved by a spreadsheet, with a byte-order mark, reads as it is
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "locs.csv").read_bytes())
    assert read_table(tmp_path / "excel.csv")["x"].size == read_table(tmp_path / "locs.csv")["x"].size


def test_thunderstorm_cells_are_numbers_and_nan_where_unknown():
    stream = io.StringIO()
    writer = TableWriter(stream, "thunderstorm", pixel_size=100.0, sigma=1.2, noise_of=math.sqrt)
    writer.start_file("m.tif", 5)
    spots = {"frame": [4, 4], "x": [0.0, 0.0], "y": [9.5, 9.5], "confidence": [0.9, 0.9]}
    worth = {"photons": [1500.0, np.nan], "background": [16.0, np.nan], "uncertainty": [0.1, np.nan]}
    writer.write(Localizations.from_fields("m.tif", **spots, **worth))
    lines = stream.getvalue().splitlines()
    assert lines[1] == "1,5,50.0000,1000.0000,120.0000,1500.0000,16.0000,4.0000,10.0000"
    assert lines[2] == "2,5,50.0000,1000.0000,120.0000,NaN,NaN,NaN,NaN"


def test_stride_two_reads_any_frame_size_and_is_refused_elsewhere(run, tmp_path):
    model = build_model("offsets", height=16, width=16, counting=True, stride=2, channels=8)
    assert model(torch.zeros(1, 1, 17, 23)).shape == (1, 5, 17, 23)
    result = run("train", "--model", "heatmap", "--stride", 2, "--out", tmp_path)
    assert result.exit_code == 1 and "--stride applies to the offsets model only" in result.stderr
    result = run("train", "--stride", 3, "--out", tmp_path)
    assert result.exit_code == 1 and "--stride must be one of 1, 2" in result.stderr


@pytest.mark.slow
def test_bench_movie_times_and_scores_predict(run, tmp_path):
    """End to end on a small movie, with a counting model of the camera trained in seconds."""
    options = ["--size", 16, "--points", "0:3", "--photons", "1000:3000", "--background-photons", 10]
    options += ["--blur", 1, "--read-noise", 1.5, "--e-per-adu", 0.5, "--baseline", 100, "--n", 1000]
    trained = run("train", *options, "--epochs", 4, "--out", tmp_path, "--quiet")
    assert trained.exit_code == 0, trained.stderr
    args = ["bench", "movie", "--checkpoint", tmp_path / "train", "--out", tmp_path / "movie", "--json"]
    refused = run("bench", "holdouts", "--checkpoint", tmp_path / "train")
    assert refused.exit_code == 2 and "No such option: --checkpoint" in refused.stderr
    from pixelreg.bench.movie import run_movie

    results = run_movie(tmp_path / "movie", frames=3, size=48, spots=12, checkpoint=tmp_path / "train")
    ours = results["methods"]["pixelreg"]
    assert ours["mpx_per_second"] == pytest.approx(ours["frames_per_second"] * 48 * 48 / 1e6, rel=0.01)
    assert ours["recall"] > 0.3 and results["spots_per_frame"] == pytest.approx(12, abs=2)
    stages = results["stages_ms_per_frame"]  # the profile behind the frames per second
    assert list(stages) == ["background map", "network", "readout", "photometry"] and min(stages.values()) > 0
    assert not (tmp_path / "movie" / "movie.tif").exists()  # the movie is made again on demand
    one, cluster = (results["methods"][f"pixelreg --out{k}"] for k in (", one process", " --workers 2"))
    assert one["jaccard"] == cluster["jaccard"] == ours["jaccard"] and one["rmse_px"] == cluster["rmse_px"]
    assert (
        sum(w["frames"] for w in cluster["workers"].values()) == 3 and cluster["stage_seconds"]["detect"] > 0
    )
    network = results["network"]  # the network's FLOPs and rate against a matrix product's
    assert network["gflop_per_frame"] > 0 and 0 < network["gflops"] < 10 * network["matmul_gflops"]
    missing = run(*args[:3], tmp_path / "nothing.pt", *args[4:])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: checkpoint not found")
    for extra, code, message in (
        (["--n", 10], 2, "No such option: --n"),
        (["--epochs", 2], 1, "none is trained"),
    ):
        refused = run(*args, *extra)
        assert refused.exit_code == code and message in refused.stderr, refused.stderr
    assert not (tmp_path / "movie" / "movie.json").exists()


def test_bfloat16_moves_detections_by_thousandths_of_a_pixel(counting_run):
    """predict's fast arithmetic, where the hardware has it: the same spots, nearly the same places."""
    model, _ = load_model(counting_run / "best.pt")
    if not inference.bfloat16_native("cpu"):
        assert inference.set_precision(model, "auto", "cpu") == "float32"
        pytest.skip("this CPU has no native bfloat16")
    spec = DataSpec(n=4, height=48, width=48, points=8, points_max=12, blur=1.0, noise=3.0,
                    background=20.0, brightness=400.0, subpixel=True, holdout="none",
                    val_fraction=0.0, test_fraction=0.0, seed=3)  # fmt: skip
    images = make_dataset(spec).images
    assert inference.set_precision(model, "float32", "cpu") == "float32"
    exact, exact_confidence = inference.counted_points(model, images)
    assert inference.set_precision(model, "auto", "cpu") == "bfloat16"
    fast, fast_confidence = inference.counted_points(model, images)
    assert np.array_equal(np.isfinite(exact[..., 0]), np.isfinite(fast[..., 0]))
    assert np.isfinite(exact[..., 0]).sum() > 20
    assert np.nanmax(np.abs(fast - exact)) < 0.02
    assert np.abs(fast_confidence - exact_confidence).max() < 0.02


def test_precision_is_refused_where_it_cannot_apply(run, counting_run, small_run, tmp_path):
    frame = tmp_path / "frame.npy"
    np.save(frame, spots_frame([(8, 9)]))
    result = run("predict", counting_run, frame, "--precision", "float16")
    assert result.exit_code == 1 and "--precision must be one of auto, float32, bfloat16" in result.stderr
    result = run("predict", small_run, frame, "--precision", "bfloat16")
    assert result.exit_code == 1 and "applies to the offsets model" in result.stderr
    assert run("predict", small_run, frame, "--precision", "float32").exit_code == 0


def test_the_background_level_of_a_large_frame_is_its_median():
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.poisson(10.0, (2, 100 * 100)).astype(np.float32))
    assert torch.equal(background_level(small), small.median(1).values)  # every pixel of a small one
    large = torch.from_numpy(rng.normal(100.0, 5.0, (2, 600 * 600)).astype(np.float32))
    large[:, ::7] += 1000.0  # a spot in every 7 pixels pulls the median up a little
    assert (background_level(large) - large.median(1).values).abs().max() < 0.1


def test_spots_on_an_uneven_background_are_found_where_they_are(counting_run):
    """A large frame's background is mapped block by block: spots on a ramp of illumination from
    20 to 60 grey levels (the model saw flat backgrounds of 20) are all found, at their places."""
    model, _ = load_model(counting_run / "best.pt")
    spots = [(x, y) for x in range(12, 160, 20) for y in range(12, 150, 25)]
    frame = spots_frame(spots, height=150, width=160).astype(np.int16) - 20
    ramp = np.linspace(20, 60, 160)[None, :] + np.random.default_rng(1).normal(0, 3, (150, 160))
    frame = np.clip(frame + ramp, 0, 255).astype(np.uint8)[None]
    found, confidence = inference.counted_points(model, frame)
    kept = found[0][np.isfinite(found[0, :, 0])]
    gap = np.linalg.norm(kept[:, None] - np.array(spots, dtype=float)[None], axis=-1)
    assert len(kept) == len(spots)
    assert gap.min(0).max() < 0.3 and gap.min(1).max() < 0.3


def test_frames_refused_while_read_leave_no_table_on_stdout(run, small_run, tmp_path):
    """The header goes out with the first rows: a movie refused when its first frames are read
    leaves stdout empty, not a table's first line."""
    frames = np.full((3, 16, 16), 1000, dtype=np.uint16)  # 16-bit counts for a grey-level model
    tifffile.imwrite(tmp_path / "counts.tif", frames, photometric="minisblack")
    result = run("predict", small_run, tmp_path / "counts.tif")
    assert result.exit_code == 1 and "grey levels must lie in 0..255" in result.stderr
    assert result.stdout == ""
