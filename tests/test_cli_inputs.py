"""Every input checked before the work, by one check each: damaged movies, camera values,
outputs that collide or cannot be written, a model given the other kind of data. A refusal is
one line, leaves nothing behind, prints no row, and comes before torch is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pixelreg.cli.tables import metrics_table
from pixelreg.simulate.foreign import render_stars


def refused(result, *words: str, code: int = 1) -> None:
    """One `Error:` line naming `words`, exit `code`, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert result.stdout == ""


def cut(path: Path, kept: float = 0.99) -> Path:
    """`path` with its last bytes cut off, beside it."""
    short = path.with_name(f"cut_{path.name}")
    data = path.read_bytes()
    short.write_bytes(data[: int(len(data) * kept)])
    return short


@pytest.fixture(scope="module")
def stars(tmp_path_factory) -> Path:
    """A star field on an sCMOS (another renderer's), as raw 16-bit frames."""
    path = tmp_path_factory.mktemp("stars") / "stars.tif"
    tifffile.imwrite(path, render_stars(frames=40, size=96, n_stars=14, seed=2).frames)
    return path


@pytest.fixture(scope="module")
def camera_model(checkpoint_of, tmp_path_factory) -> Path:
    return checkpoint_of(tmp_path_factory.mktemp("camera") / "camera.pt", camera=True)


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> dict[str, Path]:
    """16x16 movies: camera counts with a spot, grey levels, counts over 255, a page-by-page
    stack cut short, and one whose first page points to itself."""
    folder = tmp_path_factory.mktemp("movies")
    counts = (np.random.default_rng(0).poisson(10, (60, 16, 16)) + 100).astype(np.uint16)
    counts[:, 8, 8] += 3000
    tifffile.imwrite(folder / "counts.tif", counts)
    grey = np.zeros((5, 16, 16), np.uint8)
    grey[:, 4, 6] = 255
    tifffile.imwrite(folder / "grey.tif", grey)
    tifffile.imwrite(folder / "deep.tif", counts)  # values over 255: not grey levels
    tifffile.imwrite(folder / "pages.tif", counts, metadata=None)
    cuts = {"cut": cut(folder / "pages.tif"), "cut_block": cut(folder / "counts.tif")}
    return {**{p.stem: p for p in folder.iterdir()}, **cuts}


# 1. a damaged movie is an error, in every command that reads movies


@pytest.mark.parametrize("command", ["predict", "calibrate"])
@pytest.mark.parametrize("movie", ["cut", "cut_block"])
def test_a_truncated_movie_is_refused(run, camera_model, movies, tmp_path, command, movie):
    path = movies[movie]
    args = [camera_model, path] if command == "predict" else [path, "--out", tmp_path / "s.json"]
    refused(run(command, *args), f"{path.name} is not a readable TIFF")
    assert list(tmp_path.iterdir()) == []


# 2, 13. camera values: one check, the option named as given


@pytest.mark.parametrize("command", ["predict", "calibrate"])
@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--baseline", "1e300", "--baseline must be 0 to 65534 ADU"),
        ("--baseline", "70000", "--baseline must be 0 to 65534 ADU"),
        ("--baseline", "nan", "--baseline must be"),
        ("--e-per-adu", "1e300", "--e-per-adu must be 0.001 to 10000"),
        ("--e-per-adu", "0", "--e-per-adu must be 0.001 to 10000"),
        ("--em-gain", "0.5", "--em-gain must be 0 (no EM register) or 1 to 10000"),
    ],
)
def test_camera_values_have_one_check(run, camera_model, movies, tmp_path, command, option, value, words):
    args = (
        [camera_model, movies["counts"]]
        if command == "predict"
        else [movies["counts"], "--out", tmp_path / "s.json"]
    )
    refused(run(command, *args, option, value), words)


def test_a_baseline_above_the_movie_is_a_warning(run, stars, tmp_path):
    result = run("calibrate", stars, "--baseline", 5000, "--out", tmp_path / "s.json", "--quiet")
    assert "Warning: the baseline given, 5000 ADU, lies above most of the pixels" in result.stderr


def test_an_em_gain_that_makes_an_impossible_camera_is_named(run, stars, tmp_path):
    result = run("calibrate", stars, "--em-gain", 10000, "--out", tmp_path / "s.json", "--quiet")
    refused(result, "with --em-gain 10000 is beyond any real one", "is --em-gain right?")
    assert "--e-per-adu" not in result.stderr and list(tmp_path.iterdir()) == []


def test_a_movie_of_one_value_is_not_called_saturated(run, tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.full((20, 32, 32), 100, np.uint16))
    result = run("calibrate", tmp_path / "flat.tif", "--out", tmp_path / "s.json")
    refused(result, "every pixel of the 20 frames reads 100 ADU")
    assert "saturated" not in result.stderr


# 3, 7. outputs: never the same file, checked before the work, written together


@pytest.mark.parametrize("names", [["--out", "spec.png"], ["--out", "f.png", "--figure", "f.png"]])
def test_outputs_that_name_one_file_are_refused(run, stars, tmp_path, names):
    args = [tmp_path / name if not name.startswith("--") else name for name in names]
    refused(run("calibrate", stars, *args), "both name")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_calibrate_keeps_the_old_figure(run, stars, tmp_path):
    old = tmp_path / "old.png"
    old.write_bytes(b"an older figure")
    (tmp_path / "file").write_text("a file, not a folder")
    result = run("calibrate", stars, "--figure", old, "--out", tmp_path / "file" / "spec.json")
    refused(result, "cannot write", "a part of its path is a file")
    assert old.read_bytes() == b"an older figure"


def test_files_written_together_replace_none_when_one_fails(tmp_path):
    from pixelreg.errors import PixelregError
    from pixelreg.io.files import write_together

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")

    def fails(tmp: Path) -> None:
        raise PixelregError("the second file cannot be made")

    with pytest.raises(PixelregError):
        write_together([(first, lambda tmp: tmp.write_text("new a")), (second, fails)])
    assert first.read_text() == "old a" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    write_together([(first, lambda tmp: tmp.write_text("new a")), (second, lambda tmp: tmp.write_text("b"))])
    assert (first.read_text(), second.read_text()) == ("new a", "b")


# 4. the model and the data agree


def test_a_grey_model_is_not_scored_on_camera_counts(run, small_run, tmp_path):
    data = tmp_path / "counts.npz"
    made = run("generate", "--n", 20, "--size", 16, "--photons", 1000, "--blur", 1, "--out", data, "--quiet")
    assert made.exit_code == 0, made.stderr
    refused(
        run("evaluate", small_run, "--data", data, "--out", tmp_path / "ev"),
        "camera's 16-bit counts",
        "8-bit grey levels",
    )
    assert not (tmp_path / "ev").exists()


def test_a_camera_model_is_not_scored_on_grey_levels(run, camera_model, tmp_path):
    data = tmp_path / "grey.npz"
    made = run("generate", "--n", 20, "--size", 16, "--points", "0:3", "--blur", 1, "--out", data, "--quiet")
    assert made.exit_code == 0, made.stderr
    result = run("evaluate", camera_model, "--data", data, "--out", tmp_path / "ev")
    refused(result, "holds 8-bit grey levels, but this model reads a camera's 16-bit counts")


@pytest.mark.parametrize(
    ("model", "movie", "words"), [("grey", "deep", "grey levels must lie in 0..255"), ("camera", "grey", "")]
)
def test_predict_refuses_the_other_kind_of_frames(run, small_run, camera_model, movies, model, movie, words):
    checkpoint = small_run if model == "grey" else camera_model
    result = run("predict", checkpoint, movies[movie])
    if model == "camera":  # 8-bit frames are valid counts (0..255 ADU): read, not refused
        assert result.exit_code == 0, result.stderr
    else:
        refused(result, words)


# 5. a pixel size the table can hold


@pytest.mark.parametrize("size", ["1e-9", "0.5", "0", "inf"])
def test_a_pixel_size_no_table_can_hold_is_refused(run, camera_model, movies, size):
    result = run("predict", camera_model, movies["counts"], "--format", "thunderstorm", "--pixel-size", size)
    refused(result, "--pixel-size must be 1 to 1e6 nm")


# 6. a report with nulls is printed, and written only whole


def test_nulls_in_a_report_print_as_dashes():
    report = {
        "model": "offsets",
        "split": "test",
        "metrics": {
            "all": {
                "n": 3,
                **dict.fromkeys(["jaccard", "recall", "precision", "rmse_px", "efficiency"]),
                "fp": 0,
                "fn": 3,
            }
        },
        "crlb": {"crlb_px": None, "rmse_over_crlb": {"model": None}},
        "recall_by_separation": {
            "edges_px": [0, 1],
            "methods": {"model": {"recall": [None, None], "truths": [0, 3]}},
        },
        "thresholds": {"model": None},
        "tolerance_px": 2.5,
        "pixel_size_nm": 100.0,
        "merge_radius_px": 1.0,
    }
    caption = str(metrics_table(report).caption)
    assert "rmse / bound: model -" in caption and "bound (each spot alone) - px" in caption


def test_evaluate_writes_nothing_when_its_report_cannot_be_shown(run, small_run, tmp_path, monkeypatch):
    import pixelreg.cli.evaluate

    def broken(report, console=None):
        raise ValueError("a table that cannot be made")

    monkeypatch.setattr(pixelreg.cli.evaluate, "metrics_table", broken)
    result = run("evaluate", small_run, "--out", tmp_path / "ev", "--device", "cpu")
    assert result.exit_code == 1 and not (tmp_path / "ev").exists()


# 8. every input checked before the first row


@pytest.mark.parametrize(("model", "bad"), [("camera", "cut"), ("grey", "deep")])
def test_no_row_is_written_before_a_later_file_is_refused(run, small_run, camera_model, movies, model, bad):
    checkpoint, good = (camera_model, movies["counts"]) if model == "camera" else (small_run, movies["grey"])
    refused(run("predict", checkpoint, good, movies[bad]), movies[bad].name)


# 9, 10, 14. tables and specs that are not what they claim


def test_a_table_with_a_huge_cell_is_one_error(run, tmp_path):
    table = tmp_path / "locs.csv"
    table.write_text("path,index,x,y\na.tif,0,1," + "9" * 200_000 + "\n")
    refused(run("plot", table), "locs.csv, row 2: not a localization table's row")


@pytest.mark.parametrize(
    ("x", "words"), [("1e300", "lie beyond any camera's frame"), ("1048577", "lie beyond")]
)
def test_a_table_beyond_any_frame_is_refused(run, tmp_path, x, words):
    table = tmp_path / "locs.csv"
    table.write_text(f"path,index,x,y\na.tif,0,{x},1\n")
    result = run("plot", table)
    refused(result, words)
    assert len(result.stderr) < 200


def test_calibrate_given_a_table_says_what_it_reads(run, tmp_path):
    table = tmp_path / "locs.csv"
    table.write_text("path,index,x,y\na.tif,0,1,1\n")
    refused(
        run("calibrate", table, "--out", tmp_path / "s.json"),
        "locs.csv: camera counts (16-bit ADU) are read from .npy or TIFF files",
    )


@pytest.mark.parametrize("column", ["photons", "uncertainty"])
def test_a_table_of_one_absurd_value_is_still_drawn(run, tmp_path, column):
    table = tmp_path / "locs.csv"
    values = (
        {"photons": "1e300", "uncertainty": "0.1"}
        if column == "photons"
        else {"photons": "1", "uncertainty": "1e20"}
    )
    table.write_text(
        f"path,index,x,y,photons,uncertainty\na.tif,0,1,1,{values['photons']},{values['uncertainty']}\n"
    )
    result = run("plot", table)
    assert result.exit_code == 0 and (tmp_path / "locs.png").stat().st_size > 10_000, result.stderr


def test_too_fine_a_rendering_names_zoom(run, tmp_path):
    table = tmp_path / "locs.csv"
    table.write_text("path,index,x,y\na.tif,0,16383,16383\n")
    refused(run("plot", table, "--zoom", 2), "--zoom", "at most 1")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("[" * 100_000 + "]" * 100_000, "is not a JSON spec (maximum recursion depth"),
        ('{"n": ' + "9" * 5000 + "}", "is not a JSON spec (Exceeds the limit"),
        ('{"n": 10, "pad": "' + " " * 300_000 + '"}', "is not a spec: 300,"),
    ],
)
def test_a_hostile_spec_is_one_error(run, tmp_path, content, words):
    (tmp_path / "spec.json").write_text(content)
    refused(run("train", "--spec", tmp_path / "spec.json", "--out", tmp_path / "runs"), words)


# 11. file names that are not UTF-8


@pytest.mark.skipif(sys.platform != "linux", reason="names of any bytes are a Linux file system's")
def test_a_file_name_of_any_bytes_goes_into_the_table_as_it_is(run, camera_model, movies, tmp_path):
    name = tmp_path / "bad\udcffname.tif"  # the byte 0xff, as Python holds an undecodable name
    name.write_bytes(movies["counts"].read_bytes())
    result = run("predict", camera_model, name, "--out", tmp_path / "t.csv", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert b"bad\xffname.tif" in (tmp_path / "t.csv").read_bytes()


# 15. refusals come before torch


def test_refusals_of_options_paths_and_headers_never_import_torch(small_run, movies, stars, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    empty.with_suffix(".npz").write_text("not a zip archive")
    cases = [
        ["predict", small_run, movies["cut"]],
        ["predict", small_run, movies["deep"]],
        ["predict", small_run, movies["grey"], "--device", "tpu"],
        ["predict", small_run, movies["grey"], "--precision", "float8"],
        ["predict", small_run, movies["grey"], "--baseline", "nan"],
        ["predict", small_run, movies["grey"], "--threshold", "0.5"],
        ["predict", small_run, movies["grey"], "--out", tmp_path / "file" / "t.csv"],
        ["calibrate", stars, "--frames", "0"],
        ["calibrate", movies["cut"], "--out", tmp_path / "s.json"],
        ["calibrate", stars, "--out", tmp_path / "empty.csv" / "s.json"],
        ["evaluate", small_run, "--device", "tpu"],
        ["evaluate", small_run, "--data", empty.with_suffix(".npz")],
        ["evaluate", small_run, "--out", tmp_path / "file" / "ev"],
        ["train", "--epochs", "1", "--out", tmp_path / "file" / "runs"],
        ["plot", empty],
        ["plot", empty, "--zoom", "0"],
    ]
    (tmp_path / "file").write_text("a file")
    code = (
        "import json, sys\nfrom pixelreg.__main__ import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    sys.argv = ['pixelreg', *argv]\n"
        "    try:\n        main()\n    except SystemExit as exit:\n        assert exit.code == 1, argv\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    argv = json.dumps([[str(a) for a in case] for case in cases])
    done = subprocess.run([sys.executable, "-c", code, argv], capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases) + 1 and all(line.startswith("Error: ") for line in lines[:-1]), (
        done.stderr
    )
    assert lines[-1] == "False", done.stderr


# 16. rows go out as each batch of frames is done


def test_rows_are_flushed_batch_by_batch(camera_model, movies, monkeypatch):
    import io

    import pixelreg.io.frames
    from pixelreg.localize import Localizer

    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            Counting.flushes += 1

    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", 16 * 16 * 10)  # 10 frames a batch
    localizer = Localizer.load(camera_model, device="cpu")
    stream = Counting()
    localizer.write_table(localizer.open([movies["counts"]]), stream)
    assert Counting.flushes == 6  # 60 frames


@pytest.mark.parametrize("closed", [True, False])
def test_a_reader_that_left_is_seen_without_writing(closed):
    code = (
        "import os, sys\nfrom pixelreg.cli.app import reader_gone\n"
        "read, write = os.pipe()\nos.dup2(write, sys.stdout.fileno())\n"
        f"if {closed}:\n    os.close(read)\n"
        "print(reader_gone(), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip() == str(closed)
