"""Inputs a hostile user tries: nothing replaced, nothing half-done, nothing slow to refuse."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from pixelreg.cli import app
from pixelreg.cli.tables import metrics_table
from pixelreg.nn.train import SilentReporter, TrainConfig, TrainingInterrupted, train

PIXELREG = [sys.executable, "-m", "pixelreg"]
TINY = ["--n", "300", "--size", "16", "--epochs", "1", "--device", "cpu", "--quiet"]


def one_error_line(result, code: int = 1, words: str = "") -> None:
    """The command failed with `code` and said so in one `Error:` line containing `words`."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- what a write may replace --------------------------------------------------------------


def test_a_fifo_a_folder_or_a_device_is_never_replaced(run, tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    (tmp_path / "folder.npz").mkdir()
    targets = ["fifo.npz", "folder.npz"]
    try:
        os.mknod(tmp_path / "null.npz", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append("null.npz")
    except PermissionError:
        pass  # not root: the fifo and the folder stand for every special file
    for name in targets:
        before = os.lstat(tmp_path / name)
        one_error_line(run("generate", "--n", 20, "--size", 8, "--out", tmp_path / name), 1, "cannot write")
        after = os.lstat(tmp_path / name)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(targets)  # no temporary left


def test_a_symlink_is_followed_and_kept(run, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link.npz").symlink_to(tmp_path / "real" / "data.npz")
    result = run("generate", "--n", 20, "--size", 8, "--out", tmp_path / "link.npz")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "link.npz").is_symlink()
    with np.load(tmp_path / "real" / "data.npz") as data:
        assert data["images"].shape == (20, 8, 8)
    (tmp_path / "to_null.npz").symlink_to("/dev/null")
    one_error_line(run("generate", "--n", 20, "--size", 8, "--out", tmp_path / "to_null.npz"), 1, "/dev/null")
    assert (tmp_path / "to_null.npz").is_symlink()


def test_files_get_the_permissions_of_the_umask(run, tmp_path):
    previous = os.umask(0o027)
    try:
        assert run("generate", "--n", 20, "--size", 8, "--out", tmp_path / "d.npz").exit_code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "d.npz").stat().st_mode) == 0o640


@pytest.mark.parametrize("name", ["../escaped", "../../escaped", "/tmp/absolute", "a/b", "", " ", ".", ".."])
def test_a_run_name_is_one_folder_inside_out(run, tmp_path, name):
    result = run("train", *TINY, "--out", tmp_path / "runs", "--name", name)
    one_error_line(result, 1, "--name")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_out_naming_a_file_is_a_clear_error(run, small_run, tmp_path):
    (tmp_path / "file").write_text("x")
    one_error_line(
        run("evaluate", small_run, "--out", tmp_path / "file", "--device", "cpu"), 1, "is not a folder"
    )


# --- a run that never finished leaves nothing ------------------------------------------------


class FailsAtFirstBatch(SilentReporter):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def batch(self) -> None:
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), MemoryError()], ids=["bug", "memory"])
def test_a_run_failing_in_its_first_epoch_leaves_nothing(tmp_path, error):
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", spec={"n": 200, "height": 16, "width": 16})
    with pytest.raises(type(error)):
        train(config, tmp_path / "runs" / "mine", FailsAtFirstBatch(error))
    assert list(tmp_path.iterdir()) == []


class InterruptAtFirstBatch(SilentReporter):
    def batch(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def test_a_run_interrupted_in_its_first_epoch_leaves_nothing(tmp_path):
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", spec={"n": 200, "height": 16, "width": 16})
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, tmp_path / "run", InterruptAtFirstBatch())
    assert stopped.value.epoch == 0
    assert list(tmp_path.iterdir()) == []


def test_a_model_too_big_for_memory_is_refused_before_anything_is_written(run, tmp_path):
    result = run("train", *TINY, "--channels", 1024, "--batch-size", 100000, "--out", tmp_path)
    one_error_line(result, 1, "needs about")
    one_error_line(
        run("train", *TINY, "--channels", 100000, "--out", tmp_path), 1, "--channels must be 1 to 1024"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_untrained_checkpoint_is_not_scored(run, small_run, tmp_path):
    payload = torch.load(small_run / "last.pt", weights_only=True)
    torch.save({**payload, "epoch": 0}, tmp_path / "last.pt")
    one_error_line(run("evaluate", tmp_path / "last.pt", "--device", "cpu"), 1, "untrained")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# --- results that would lie ------------------------------------------------------------------


def test_divergence_is_an_error_naming_the_epoch_and_the_learning_rate(run, tmp_path):
    args = ["--model", "cnn", "--lr", "1000", "--n", "300", "--size", "16", "--epochs", "1", "--json"]
    result = run("train", *args, "--out", tmp_path, "--device", "cpu")
    assert result.exit_code == 1
    assert "diverged in epoch 1" in result.stderr and "--lr" in result.stderr
    assert result.stdout == "" and "NaN" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_with_nan_weights_writes_nothing_and_prints_no_nan(run, small_run, tmp_path):
    payload = torch.load(small_run / "best.pt", weights_only=True)
    weights = {key: torch.full_like(value, float("nan")) for key, value in payload["state_dict"].items()}
    torch.save({**payload, "state_dict": weights}, tmp_path / "best.pt")
    image = np.zeros((16, 16), dtype=np.uint8)
    np.save(tmp_path / "one.npy", image)
    for args in (["evaluate", tmp_path / "best.pt"], ["predict", tmp_path / "best.pt", tmp_path / "one.npy"]):
        one_error_line(run(*args, "--device", "cpu"), 1, "NaN")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "one.npy"]


@pytest.mark.slow
def test_plot_reevaluates_predictions_left_without_metrics(run, small_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy, ignore=shutil.ignore_patterns("metrics.json", "figures"))
    assert run("evaluate", copy, "--device", "cpu", "--quiet").exit_code == 0
    (copy / "metrics.json").unlink()
    result = run("plot", copy, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert (copy / "metrics.json").is_file()


@pytest.mark.parametrize(
    "array, meaning",
    [
        (np.zeros((16, 16), np.float32), "floats in [0, 1] are intensities"),
        (np.zeros((16, 16, 3), np.uint8), "a last axis of 3 is RGB"),
        (np.zeros((2, 16, 16, 4), np.uint8), "a stack of RGBA images"),
        (np.zeros((16, 16), np.int64), "integers are grey levels"),
    ],
)
def test_images_of_every_kind_are_read_as_predict_help_says(run, small_run, tmp_path, array, meaning):
    spot = 1.0 if array.dtype.kind == "f" else 255
    if array.ndim >= 3 and array.shape[-1] in (3, 4):
        array[..., 5, 11, :] = spot
    else:
        array[..., 5, 11] = spot
    np.save(tmp_path / "a.npy", array)
    result = run("predict", small_run, tmp_path / "a.npy", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all((round(row["x"]), round(row["y"])) == (11, 5) for row in rows), meaning
    assert "floats" in run("predict", "--help").stdout


@pytest.mark.parametrize("shape", [(3, 16, 0), (0, 16, 16), (16, 0)])
def test_an_array_without_pixels_is_a_clear_error(run, small_run, tmp_path, shape):
    np.save(tmp_path / "empty.npy", np.zeros(shape))
    one_error_line(run("predict", small_run, tmp_path / "empty.npy", "--device", "cpu"), 1, "empty.npy")


# --- untrusted fields ------------------------------------------------------------------------


def _dataset_with_spec(path: Path, spec: object, size: int = 16) -> Path:
    images = np.zeros((4, size, size), dtype=np.uint8)
    points = np.zeros((4, 1, 2), dtype=np.float32)
    split = np.array(["train", "val", "test", "test"])
    np.savez(path, images=images, points=points, split=split, spec=np.asarray(json.dumps(spec)))
    return path


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"n": "abc"}, "'n' must be an integer"),
        ({"noise": "5"}, "'noise' must be a number"),
        ({"points": None}, "'points' must be an integer"),
        ({"blur": True}, "'blur' must be a number"),
        ([1, 2], "must be an object"),
        ("text", "must be an object"),
        ({"height": 50, "width": 50}, "describes 1 point(s) in 50x50"),
        ({"colour": "red"}, "unknown fields"),
        ({"seed": -4}, "the stored spec: seed must be 0"),
    ],
)
def test_a_stored_spec_is_checked_field_by_field(run, small_run, tmp_path, spec, words):
    path = _dataset_with_spec(tmp_path / "d.npz", spec)
    result = run("evaluate", small_run, "--data", path, "--device", "cpu")
    one_error_line(result, 1, words)
    assert "d.npz" in result.stderr


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model_args": {"height": 16, "width": 16, "points": 1, "colour": 3}}, "no argument(s) colour"),
        ({"model_args": {"height": "16"}}, "model_args field 'height'"),
        ({"model_args": "big"}, "model_args must be an object"),
        ({"state_dict": "weights"}, "state_dict must map names to tensors"),
        ({"epoch": "five"}, "'epoch' must be an integer"),
        ({"model": 7}, "unknown model 7"),
        ({"format_version": "1"}, "checkpoint format '1'"),
        ({"data_spec": {"n": "many"}}, "data_spec: field 'n'"),
        ({"config": {"epochs": "30"}}, "config: field 'epochs'"),
        ({"history": ["row"]}, "history must be rows of finite numbers"),
        ({"threshold": 1.5}, "field 'threshold' must be in [0, 1], got 1.5"),
        ({"merge_radius": 0.0}, "field 'merge_radius' must be in (0, 3.0], got 0.0"),
        ({"merge_radius": "wide"}, "field 'merge_radius'"),
    ],
)
def test_checkpoint_fields_are_checked_by_type(run, small_run, tmp_path, change, words):
    payload = torch.load(small_run / "best.pt", weights_only=True)
    torch.save({**payload, **change}, tmp_path / "odd.pt")
    result = run("evaluate", tmp_path / "odd.pt", "--device", "cpu")
    one_error_line(result, 1, words)
    assert "odd.pt" in result.stderr


def test_a_history_cell_that_is_not_a_number_is_named(run, small_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    lines = (copy / "history.csv").read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[1], "lots", 1)
    (copy / "history.csv").write_text("\n".join(lines) + "\n")
    one_error_line(
        run("plot", copy, "--device", "cpu"), 1, "line 3: train_loss is 'lots', not a finite number"
    )


@pytest.mark.parametrize("seed", ["-1", str(2**70), str(2**32)])
def test_a_seed_out_of_range_is_a_usage_error(run, seed, tmp_path):
    one_error_line(run("generate", "--seed", seed, "--out", tmp_path / "d.npz"), 2, "--seed")


# --- too big, too slow, too fragile ----------------------------------------------------------


def test_a_dataset_too_big_for_memory_is_refused_at_once(run, tmp_path):
    started = time.perf_counter()
    result = run("generate", "--n", 10**9, "--out", tmp_path / "d.npz")
    one_error_line(result, 1, "needs about")
    assert "TiB" in result.stderr and time.perf_counter() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_an_npz_declaring_a_huge_array_is_refused_before_reading_it(run, small_run, tmp_path):
    header = {"descr": "|u1", "fortran_order": False, "shape": (1_000_000, 512, 512)}
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        with archive.open("images.npy", "w") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
    one_error_line(run("evaluate", small_run, "--data", tmp_path / "huge.npz", "--device", "cpu"), 1, "GiB")


def test_refusals_never_import_torch():
    code = (
        "import sys\nfrom pixelreg.__main__ import main\n"
        "for argv in (['generate', '--n', '0'], ['train', '--epochs', '0'], ['evaluate', 'missing.pt'],"
        " ['predict', 'missing.pt', 'x.png'], ['plot', 'missing'], ['--version']):\n"
        "    sys.argv = ['pixelreg', *argv]\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr


def test_sigterm_during_generate_exits_130_and_leaves_no_temporary(tmp_path):
    command = [*PIXELREG, "generate", "--n", "400000", "--size", "64", "--blur", "1", "--out", "d.npz"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "Error: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_a_broken_pipe_ends_quietly(small_run, tmp_path):
    stack = np.zeros((3000, 16, 16), dtype=np.uint8)
    stack[:, 3, 4] = 255
    np.save(tmp_path / "stack.npy", stack)
    script = f"set -o pipefail; {' '.join(PIXELREG)} predict {small_run} {tmp_path / 'stack.npy'} --device cpu | head -1"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout == "path,index,x,y,confidence,photons,background,uncertainty\n"
    assert done.stderr == ""
    assert done.returncode == 141  # as for any program a closed pipe stops: 128 + SIGPIPE


def test_a_closed_stdout_is_one_error_line_and_nothing_is_written(tmp_path):
    script = f"{' '.join(PIXELREG)} generate --n 10 --size 8 --out d.npz >&-"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: standard output is closed")
    assert list(tmp_path.iterdir()) == []


def test_numbers_are_never_cut_short_on_a_narrow_terminal(small_run, monkeypatch):
    from pixelreg.evaluate.report import evaluate

    report = evaluate(small_run, device="cpu").report
    for width in (40, 60, 80, 100):
        narrow = Console(width=width, file=StringIO(), highlight=False)
        narrow.print(metrics_table(report, narrow))
        text = narrow.file.getvalue()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
        if width >= 60:  # room for the essential columns: every number whole on its line
            assert "100.00%" in text and "0.0000" in text


def test_a_usage_error_is_one_line_with_exit_2(run):
    for args in (["generate", "--n", "ten"], ["generate", "--colour", "red"], ["nosuchcommand"]):
        one_error_line(run(*args), 2)


def test_resume_refuses_settings_it_would_ignore(run, small_run):
    result = run("train", "--resume", small_run / "last.pt", "--epochs", "5")
    one_error_line(result, 1, "drop --epochs")


def test_bench_refuses_a_model_named_twice(run, tmp_path):
    one_error_line(
        run("bench", "holdouts", "--models", "heatmap,heatmap", "--out", tmp_path / "b"), 1, "more than once"
    )
    assert list(tmp_path.iterdir()) == []


# --- variants found by trying harder ---------------------------------------------------------


def test_a_loop_of_links_is_refused_and_kept(run, tmp_path):
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    one_error_line(run("generate", "--n", 20, "--size", 8, "--out", tmp_path / "a.npz"), 1, "loop")
    assert (tmp_path / "a.npz").is_symlink() and (tmp_path / "b.npz").is_symlink()


def test_a_name_with_a_control_character_is_refused(run, tmp_path):
    one_error_line(run("train", *TINY, "--out", tmp_path, "--name", "a\nb"), 1, "--name")


def test_resume_reads_its_dataset_from_where_it_was_trained(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("generate", "--n", 300, "--size", 16, "--out", "d.npz").exit_code == 0
    args = ["--data", "d.npz", "--epochs", 2, "--device", "cpu", "--quiet", "--out", "runs"]
    result = CliRunner().invoke(app, [str(a) for a in ["train", *args]], catch_exceptions=False)
    assert result.exit_code == 0
    payload = torch.load(tmp_path / "runs" / "train" / "last.pt", weights_only=True)
    torch.save(
        {**payload, "epoch": 1, "history": payload["history"][:1]}, tmp_path / "runs" / "train" / "last.pt"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "d.npz").write_bytes(b"not the dataset")  # a file of the same name here
    result = run("train", "--resume", tmp_path / "runs" / "train", "--quiet")
    assert result.exit_code == 0, result.stderr


def test_a_new_best_checkpoint_takes_the_old_evaluation_with_it(run, small_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    assert run("evaluate", copy, "--device", "cpu", "--quiet").exit_code == 0
    result = run("train", *TINY, "--out", tmp_path, "--name", "run", "--exist-ok")
    assert result.exit_code == 0, result.stderr
    assert not (copy / "metrics.json").exists() and not (copy / "predictions.npz").exists()


@pytest.mark.parametrize("blur", ["0", "0.1"])
def test_too_little_blur_has_no_bound_rather_than_a_wrong_one(run, tmp_path, blur):
    args = ["--blur", blur, "--subpixel", "--noise", "5", "--background", "20", "--out", tmp_path]
    result = run("train", *TINY, *args)
    assert result.exit_code == 0, result.stderr
    result = run("evaluate", result.stdout.strip(), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["crlb"] is None


@pytest.mark.parametrize(
    "change, words",
    [
        ({"best": {"epoch": 2, "val_mean_px": float("nan"), "val_loss": 0.1}}, "two finite numbers"),
        ({"history": [{"epoch": 1, "train_loss": float("inf")}]}, "finite numbers"),
        ({"optimizer": "adam"}, "optimizer state holds something other than numbers"),
        ({"scheduler": {"last_epoch": "x"}}, "scheduler state holds"),
    ],
)
def test_resume_checks_the_training_state(run, small_run, tmp_path, change, words):
    payload = torch.load(small_run / "last.pt", weights_only=True)
    torch.save({**payload, "epoch": 1, **change}, tmp_path / "last.pt")
    one_error_line(run("train", "--resume", tmp_path / "last.pt"), 1, words)


def test_evaluate_writes_neither_file_when_metrics_json_cannot_be_written(run, small_run, tmp_path):
    (tmp_path / "metrics.json").mkdir()
    one_error_line(run("evaluate", small_run, "--out", tmp_path, "--device", "cpu"), 1, "metrics.json")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_overflowing_min_distance_is_refused(run):
    one_error_line(run("generate", "--points", 2, "--min-distance", "1e308"), 1, "--min-distance")


def test_a_damaged_archive_member_is_a_clear_error(run, small_run, tmp_path):
    good = tmp_path / "good.npz"
    assert run("generate", "--n", 30, "--size", 16, "--out", good).exit_code == 0
    data = bytearray(good.read_bytes())
    start = data.find(b"images.npy") + 200
    data[start : start + 40] = b"\xff" * 40  # inside the compressed images
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    one_error_line(
        run("evaluate", small_run, "--data", tmp_path / "bad.npz", "--device", "cpu"), 1, "bad.npz"
    )


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\xff\xfe\x00garbage", "not a readable history"),
        (b"epoch,seconds\n1,2\n", "lacks the column(s) train_loss"),
        (b"epoch,train_loss,val_loss,val_mean_px,lr,seconds\n1,nan,1,1,1,1\n", "not a finite number"),
    ],
)
def test_history_files_are_checked(run, small_run, tmp_path, content, words):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    (copy / "history.csv").write_bytes(content)
    one_error_line(run("plot", copy, "--device", "cpu"), 1, words)


def test_a_write_failing_in_the_first_epoch_leaves_nothing(tmp_path, monkeypatch):
    from pixelreg.errors import PixelregError
    from pixelreg.nn import train as train_module

    def full_disk(path, payload):
        raise PixelregError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(train_module, "save_checkpoint", full_disk)
    config = TrainConfig(epochs=1, batch_size=32, device="cpu", spec={"n": 200, "height": 16, "width": 16})
    with pytest.raises(PixelregError, match="No space"):
        train(config, tmp_path / "runs" / "run")
    assert list(tmp_path.iterdir()) == []


def test_a_narrow_two_dimensional_array_is_one_grey_image(tmp_path):
    from pixelreg.io.frames import read_images

    np.save(tmp_path / "thin.npy", np.zeros((16, 3), np.uint8))
    assert read_images(tmp_path / "thin.npy").shape == (1, 16, 3)


def test_inference_memory_is_estimated_for_huge_images():
    from pixelreg.nn.inference import inference_bytes
    from pixelreg.nn.registry import build_model

    assert inference_bytes(build_model("heatmap"), 30000, 30000) > 50 * 2**30
