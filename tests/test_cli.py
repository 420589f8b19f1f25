"""The commands end to end, through Typer's CliRunner, as a user or a script would call them."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import typer

from pixelreg.cli import app
from pixelreg.cli.app import join_size_arguments


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """A minimal PNG writer (8-bit grey or RGB), independent of the project and of Pillow."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def every_command(group, path=()):
    """(words, click command) for every command and subcommand of the app, the app included."""
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from every_command(command, (*path, name))


COMMANDS = list(every_command(typer.main.get_command(app)))


@pytest.mark.parametrize(
    "words, command", COMMANDS, ids=[" ".join(words) or "pixelreg" for words, _ in COMMANDS]
)
def test_every_command_has_help_naming_each_option(run, words, command):
    result = run(*words, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert f"Usage: pixelreg {' '.join(words)}".strip() in text
    flags = [opt for param in command.params for opt in param.opts if opt.startswith("--")]
    assert all(flag in text for flag in flags), [f for f in flags if f not in text]
    assert all(name in text for name in getattr(command, "commands", {}))  # a group names its commands
    if words and words != ("bench",):  # each command's own help says what it does, with an example
        assert "Example: pixelreg" in text


def test_generate_prints_the_path_and_writes_the_dataset(run, tmp_path):
    out = tmp_path / "d.npz"
    result = run("generate", "--out", out, "--n", 300, "--size", "12x20", "--holdout", "quadrant")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    with np.load(out, allow_pickle=False) as data:
        assert data["images"].shape == (300, 12, 20) and data["points"].shape == (300, 1, 2)
        assert json.loads(str(data["spec"]))["holdout"] == "quadrant"


def test_size_given_as_two_numbers_is_joined():
    assert join_size_arguments(["generate", "--size", "30", "70", "--n", "5"]) == [
        "generate",
        "--size",
        "30x70",
        "--n",
        "5",
    ]
    assert join_size_arguments(["generate", "--size", "30", "--n", "5"]) == [
        "generate",
        "--size",
        "30",
        "--n",
        "5",
    ]


@pytest.mark.slow
def test_generate_train_evaluate_predict_plot_chain(run, tmp_path):
    data = tmp_path / "d.npz"
    assert run("generate", "--out", data, "--n", 600, "--size", 16, "--seed", 2).exit_code == 0
    result = run(
        "train",
        "--data",
        data,
        "--epochs",
        2,
        "--batch-size",
        32,
        "--out",
        tmp_path / "runs",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.stderr
    run_dir = Path(result.stdout.strip())
    assert run_dir == tmp_path / "runs" / "train"
    result = run("evaluate", run_dir / "best.pt", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["metrics"]) == {"all", "seen", "unseen"}
    assert set(report["metrics"]["unseen"]) >= {
        "n",
        "mse",
        "mean_px",
        "median_px",
        "p95_px",
        "max_px",
        "exact",
    }
    assert report["metrics"]["unseen"]["n"] == 60  # the default holdout: test positions are unseen
    assert json.loads((run_dir / "metrics.json").read_text()) == report
    image = np.zeros((16, 16), dtype=np.uint8)
    image[11, 4] = 255
    png = write_png(tmp_path / "one.png", image)
    result = run("predict", run_dir, png, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header == "path,index,x,y,confidence,photons,background,uncertainty"
    path, index, x, y, *rest = row.split(",")
    assert rest == ["", "", "", ""]  # a heatmap model has neither confidence nor photometry
    assert (path, index, round(float(x)), round(float(y))) == (str(png), "0", 4, 11)
    result = run("plot", run_dir)
    assert result.exit_code == 0, result.stderr
    names = sorted(Path(line).name for line in result.stdout.split())
    assert names == ["error_map.png", "loss.png", "samples.png", "scatter.png"]
    for name in names:
        assert (run_dir / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_finds_every_position_in_independent_images_of_other_sizes(run, small_run, tmp_path):
    """A 16x16-trained heatmap model, given PNG and .npy images of other shapes made here."""
    for height, width in [(16, 16), (20, 12), (9, 30)]:
        ys, xs = np.divmod(np.arange(height * width), width)
        stack = np.zeros((height * width, height, width), dtype=np.uint8)
        stack[np.arange(height * width), ys, xs] = 255
        np.save(tmp_path / "all.npy", stack)
        result = run("predict", small_run / "best.pt", tmp_path / "all.npy", "--json", "--device", "cpu")
        assert result.exit_code == 0, result.stderr
        found = np.array([[row["x"], row["y"]] for row in json.loads(result.stdout)])
        np.testing.assert_array_equal(np.rint(found), np.stack([xs, ys], 1))
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[2, 13] = 255
    result = run(
        "predict", small_run / "best.pt", write_png(tmp_path / "rgb.png", rgb), "--json", "--device", "cpu"
    )
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)[0]
    assert (round(row["x"]), round(row["y"])) == (13, 2)


def test_an_existing_run_name_is_refused_and_nothing_is_written(run, tmp_path):
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    result = run(
        "train", "--n", 200, "--size", 16, "--epochs", 1, "--out", tmp_path / "runs", "--name", "mine"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: run directory")
    assert list((tmp_path / "runs" / "mine").iterdir()) == []


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, small_run: Path) -> Path:
    """A folder of broken or wrong inputs, one per case below."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.npz").write_bytes(b"")
    (root / "text.npz").write_text("not a zip\n")
    (root / "folder.npz").mkdir()
    images = np.zeros((4, 16, 16), dtype=np.uint8)
    points = np.zeros((4, 1, 2), dtype=np.float32)
    split = np.array(["train", "val", "test", "test"])
    np.savez(root / "nopoints.npz", images=images, split=split)
    np.savez(root / "float_images.npz", images=images.astype(np.float32), points=points, split=split)
    np.savez(root / "nan_points.npz", images=images, points=np.full_like(points, np.nan), split=split)
    np.savez(root / "outside.npz", images=images, points=points + 40, split=split)
    np.savez(root / "flat_points.npz", images=images, points=points[:, 0], split=split)
    np.savez(root / "bad_split.npz", images=images, points=points, split=np.array(["a", "b", "c", "d"]))
    data = (small_run / "best.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 3])
    (root / "garbage.pt").write_bytes(b"\x00\x01garbage" * 10)
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    (root / "notes.png").write_text("this is text, not a picture\n")
    (root / "notes.txt").write_text("hello\n")
    np.save(root / "nan.npy", np.full((16, 16), np.nan))
    np.save(root / "cube.npy", np.zeros((2, 2, 16, 16)))
    return root


CKPT = "{run}/best.pt"
BAD_INPUTS = [
    # (arguments, exit code, words the one-line message must contain)
    (["evaluate", "missing.pt"], 1, "checkpoint not found"),
    (["evaluate", "{bad}/folder.npz"], 1, "is a directory"),
    (["evaluate", "{bad}/truncated.pt"], 1, "truncated or corrupt"),
    (["evaluate", "{bad}/garbage.pt"], 1, "truncated or corrupt"),
    (["evaluate", "{bad}/foreign.pt"], 1, "not a pixelreg checkpoint"),
    (["evaluate", CKPT, "--data", "{bad}/empty.npz"], 1, "is empty"),
    (["evaluate", CKPT, "--data", "{bad}/text.npz"], 1, "not a readable .npz"),
    (["evaluate", CKPT, "--data", "{bad}/nopoints.npz"], 1, "lacks the array(s) points"),
    (["evaluate", CKPT, "--data", "{bad}/float_images.npz"], 1, "images must be uint8"),
    (["evaluate", CKPT, "--data", "{bad}/nan_points.npz"], 1, "NaN"),
    (["evaluate", CKPT, "--data", "{bad}/outside.npz"], 1, "outside"),
    (["evaluate", CKPT, "--data", "{bad}/flat_points.npz"], 1, "points must be float of shape"),
    (["evaluate", CKPT, "--data", "{bad}/bad_split.npz"], 1, "split must be"),
    (["evaluate", CKPT, "--split", "holdout"], 1, "--split must be one of"),
    (["train", "--data", "missing.npz", "--epochs", "1"], 1, "dataset not found"),
    (["train", "--epochs", "0"], 1, "--epochs must be at least 1"),
    (["train", "--epochs", "-3"], 1, "--epochs must be at least 1"),
    (["train", "--batch-size", "0"], 1, "--batch-size must be at least 1"),
    (["train", "--model", "resnet"], 1, "unknown model 'resnet'"),
    (["train", "--device", "tpu", "--epochs", "1", "--n", "100", "--size", "16"], 1, "unknown device 'tpu'"),
    (["train", "--lr", "-1"], 1, "--lr must be a positive number"),
    (["train", "--model", "cnn", "--channels", "4"], 1, "offsets models only"),
    (["generate", "--n", "0"], 1, "--n must be at least 1"),
    (["generate", "--n", "-5"], 1, "--n must be at least 1"),
    (["generate", "--val-fraction", "1.5"], 1, "--val-fraction must be in [0, 1)"),
    (["generate", "--test-fraction", "-0.1"], 1, "--test-fraction must be in [0, 1)"),
    (["generate", "--val-fraction", "0.6", "--test-fraction", "0.5"], 1, "must be below 1"),
    (["generate", "--holdout", "diagonal"], 1, "--holdout must be one of"),
    (["generate", "--size", "4"], 1, "must be 8 to 512"),
    (["generate", "--size", "big"], 2, "--size must be N"),
    (["generate", "--n", "ten"], 2, "Invalid value"),
    (["predict", CKPT, "{bad}/notes.png"], 1, "not a readable PNG"),
    (["predict", CKPT, "{bad}/notes.txt"], 1, "unsupported image type .txt"),
    (["predict", CKPT, "{bad}/nan.npy"], 1, "NaN"),
    (["predict", CKPT, "{bad}/cube.npy"], 1, "expected an array of shape"),
    (["predict", CKPT, "missing.png"], 1, "image not found"),
    (["plot", "missing_run"], 1, "run directory not found"),
    (["generate", "--n", "10", "--out", "{bad}/notes.txt/d.npz"], 1, "cannot write"),
    (
        ["train", "--n", "100", "--size", "16", "--epochs", "1", "--out", "{bad}/notes.txt"],
        1,
        "cannot create run directory",
    ),
    (["train", "--resume", "{bad}/foreign.pt"], 1, "not a pixelreg checkpoint"),
    (["train", "--resume", "{run}/best.pt"], 1, "resume from"),
    (["bench", "holdouts", "--holdouts", "diagonal"], 1, "--holdouts takes"),
    (["bench", "precision", "--blurs", "0.2"], 1, "--blurs takes numbers from 0.5"),
    (["bench", "precision", "--brightnesses", "500,x"], 1, "--brightnesses takes numbers"),
    (["bench", "precision", "--brightnesses", "0"], 1, "--brightnesses takes numbers above 0"),
    (["bench", "perf", "--precision"], 2, "No such option: --precision"),
    (["bench", "holdouts", "--blurs", "1"], 2, "No such option: --blurs"),
    (["bench", "precision", "--holdouts", "random"], 2, "No such option: --holdouts"),
    (["plot", "{bad}"], 1, "has no history.csv"),
]


@pytest.mark.parametrize("args, code, words", BAD_INPUTS, ids=[" ".join(case[0])[:60] for case in BAD_INPUTS])
def test_bad_input_gives_one_error_line_and_no_traceback(
    run, args, code, words, bad_files, small_run, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = set(bad_files.iterdir())
    result = run(*[a.format(bad=bad_files, run=small_run) for a in args])
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert words in result.stderr
    if code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    assert set(bad_files.iterdir()) == before
    assert list(tmp_path.iterdir()) == []  # nothing half-written where we stand


def test_cuda_on_a_machine_without_it_is_a_clear_error(run, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("train", "--device", "cuda", "--n", 100, "--size", 16, "--epochs", 1, "--out", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --device cuda: no CUDA GPU is available")
    assert list(tmp_path.iterdir()) == []


def test_a_cnn_checkpoint_refuses_an_image_of_another_size(run, tmp_path):
    result = run(
        "train",
        "--model",
        "cnn",
        "--n",
        200,
        "--size",
        16,
        "--epochs",
        1,
        "--out",
        tmp_path,
        "--quiet",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    image = write_png(tmp_path / "big.png", np.zeros((20, 20), dtype=np.uint8))
    result = run("predict", result.stdout.strip(), image)
    assert result.exit_code == 1
    assert "takes 16x16 images only" in result.stderr


@pytest.mark.slow
def test_noisy_blurred_data_reports_baselines_and_the_bound(run, tmp_path):
    common = ["--size", "24", "--blur", "1", "--noise", "8", "--background", "40", "--subpixel"]
    result = run("train", "--n", 600, "--epochs", 2, "--out", tmp_path, "--quiet", "--device", "cpu", *common)
    assert result.exit_code == 0, result.stderr
    result = run("evaluate", result.stdout.strip(), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["baselines"]) == {"argmax", "centroid", "gaussian_fit"}
    bound = report["crlb"]["crlb_px"]
    assert 0.05 < bound < 1.0
    fit = report["baselines"]["gaussian_fit"]
    assert report["crlb"]["rmse_hits_over_crlb"]["gaussian_fit"] == pytest.approx(
        fit["rmse_hits_px"] / bound, rel=1e-4
    )
    assert fit["rmse_hits_px"] >= bound * 0.9  # no estimator beats the bound by much on 60 images
    assert set(report["bias"]["methods"]) == {"model", "argmax", "centroid", "gaussian_fit"}
    worst_fit = max(abs(v) for v in report["bias"]["methods"]["gaussian_fit"]["x"] if v is not None)
    assert fit["bias_px"] >= worst_fit
    result = run("plot", Path(report["checkpoint"]).parent, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert {Path(line).name for line in result.stdout.split()} >= {"bias.png", "precision_vs_noise.png"}


@pytest.mark.slow
def test_bench_perf_measures_every_model(run, tmp_path):
    result = run("bench", "perf", "--rss-n", 300, "--out", tmp_path, "--json", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    perf = json.loads(result.stdout)
    assert set(perf["models"]) == {"heatmap", "cnn", "coordconv", "offsets"}
    # a model's throughput cannot beat reading its input: numpy argmax over the same images
    fastest = perf["argmax_images_per_second"]
    assert all(0 < m["inference_images_per_second"] < fastest for m in perf["models"].values())
    assert perf["default_train_epochs_to_unseen_exact"] is not None
    assert perf["train_peak_rss_mb"]["mb"] > 100  # torch's own libraries take more than that
    assert (tmp_path / "perf.json").is_file()


def test_bench_precision_sets_every_method_against_the_bound(run, tmp_path):
    out = tmp_path / "precision"
    args = ["--n", 300, "--size", 16, "--epochs", 1, "--blurs", "1.5", "--brightnesses", "400,800"]
    result = run("bench", "precision", *args, "--out", out, "--json", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    assert (out / "precision.json").is_file() and (out / "precision.png").is_file()
    methods = {"offsets", "heatmap", "argmax", "centroid", "gaussian_fit"}
    for brightness in (400.0, 800.0):
        rows = {r["method"]: r for r in results["rows"] if r["brightness"] == brightness}
        assert set(rows) == methods
        bounds = {r["crlb_px"] for r in rows.values()}
        assert len(bounds) == 1  # every method is scored on the same test spots
        shares = {r["common_share"] for r in rows.values()}
        assert len(shares) == 1  # spots that both models and the fit found: one set per cell
        assert shares.pop() <= min(rows[m]["recall_1px"] for m in ("offsets", "heatmap", "gaussian_fit"))
        for row in rows.values():
            assert row["rmse_over_crlb"] == pytest.approx(row["rmse_px"] / row["crlb_px"], abs=1e-4)
            assert (row["train_seconds"] is None) == (row["method"] not in ("offsets", "heatmap"))
    dim, bright = (
        next(r for r in results["rows"] if r["method"] == "gaussian_fit" and r["brightness"] == b)
        for b in (400.0, 800.0)
    )
    assert bright["crlb_px"] < dim["crlb_px"]  # twice the light, a tighter bound
    assert bright["rmse_hits_px"] < dim["rmse_hits_px"]


def test_a_spec_file_gives_the_data_options_and_options_beside_it_win(run, tmp_path):
    made = run("generate", "--n", 40, "--size", 12, "--blur", 1.2, "--noise", 3, "--points", "0:3",
               "--out", tmp_path / "a.npz", "--json", "--quiet")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    (tmp_path / "spec.json").write_text(json.dumps(json.loads(made.stdout)["spec"]))
    again = json.loads(run("generate", "--spec", tmp_path / "spec.json", "--out", tmp_path / "b.npz",
                           "--json", "--quiet").stdout)  # fmt: skip
    assert again["spec"] == json.loads(made.stdout)["spec"]
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"])
    changed = json.loads(run("generate", "--spec", tmp_path / "spec.json", "--n", 20, "--blur", "1:2",
                             "--out", tmp_path / "c.npz", "--json", "--quiet").stdout)["spec"]  # fmt: skip
    assert (changed["n"], changed["blur"], changed["blur_max"], changed["points_max"]) == (20, 1.0, 2.0, 3)
    for text, message in (('{"blurr": 1}', "unknown field(s) blurr"), ("[1]", "expected an object"),
                          ('{"noise": -1}', "bad.json: noise must be")):  # fmt: skip
        (tmp_path / "bad.json").write_text(text)
        result = run("generate", "--spec", tmp_path / "bad.json", "--out", tmp_path / "d.npz")
        assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "d.npz").exists()
