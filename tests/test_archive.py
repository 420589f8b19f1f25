"""`predict` over an archive: chunks of frames, resumable, on Dask clusters; the table must be
the single-process one, row for row, whatever the chunking and the workers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import pixelreg.archive.cluster
import pixelreg.io.frames
from pixelreg.archive.work import plan_chunks
from pixelreg.io.frames import open_frames

SMALL_BATCH = 16 * 16 * 10  # LOCALIZE_PIXELS for the in-process tests: 10 frames of 16x16 a batch


def spots_movie(path: Path, frames: int, side: int, seed: int = 0) -> Path:
    """Grey-level frames of 3x3 spots on a noisy background, about one per 100 px^2."""
    rng = np.random.default_rng(seed)
    movie = rng.integers(15, 26, (frames, side, side)).astype(np.uint8)
    for frame in movie:
        for x, y in rng.integers(2, side - 2, (max(1, side * side // 100), 2)):
            frame[y - 1 : y + 2, x - 1 : x + 2] = [[40, 60, 40], [60, 120, 60], [40, 60, 40]]
    tifffile.imwrite(path, movie)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return spots_movie(tmp_path_factory.mktemp("small") / "small.tif", 60, 16)


@pytest.fixture(scope="module")
def wide(tmp_path_factory, counting_run) -> tuple[Path, bytes]:
    """Frames large enough that a chunk keeps a worker busy for a while, and their table as
    one process writes it."""
    movie = spots_movie(tmp_path_factory.mktemp("wide") / "wide.tif", 40, 128)
    from typer.testing import CliRunner

    from pixelreg.cli import app

    out = movie.with_name("one.csv")
    with pytest.MonkeyPatch.context() as patch:  # in the batches the tests' chunks are
        ten_frame_batches(patch, 128)
        result = CliRunner().invoke(app, ["predict", str(counting_run), str(movie), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    return movie, out.read_bytes()


def ten_frame_batches(monkeypatch, side: int) -> None:
    """Batches of 10 frames in this process, so that each chunk of `--chunk-frames 1` is one
    batch: a worker, whose batches are larger, reads it in the same single batch."""
    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", side * side * 10)


def single(run, model: Path, movie: Path, out: Path, *args: object) -> bytes:
    result = run("predict", model, movie, "--out", out, "-q", *args)
    assert result.exit_code == 0, result.stderr
    return out.read_bytes()


def test_chunks_are_whole_batches_that_cover_every_frame(small, monkeypatch):
    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", SMALL_BATCH)
    movie = open_frames(small)
    assert movie.batch_starts() == [0, 10, 20, 30, 40, 50, 60]
    for chunk_frames, bounds in ((1, [0, 10, 20, 30, 40, 50, 60]), (25, [0, 30, 60]), (1000, [0, 60])):
        chunks = plan_chunks([movie, movie], chunk_frames)
        assert [c.first for c in chunks if c.movie == 1] + [60] == bounds
        assert [c.last for c in chunks if c.movie == 0] == bounds[1:]
    part = movie.part(30, 50)  # read as the whole file reads those frames
    whole = dict(movie.batches())
    assert [(first, len(b)) for first, b in part.batches()] == [(30, 10), (40, 10)]
    assert all(np.array_equal(b, whole[first]) for first, b in part.batches())


@pytest.mark.parametrize("chunk_frames", [1, 25, 1000])
def test_chunked_in_process_gives_the_single_process_table(
    run, counting_run, small, tmp_path, monkeypatch, chunk_frames
):
    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", SMALL_BATCH)
    one = single(run, counting_run, small, tmp_path / "one.csv")
    assert one.count(b"\n") > 60  # rows to compare: spots in every frame
    chunked = single(run, counting_run, small, tmp_path / "c.csv", "--resume", "--chunk-frames", chunk_frames)
    assert chunked == one
    assert not (tmp_path / "c.csv.parts").exists()  # the work folder goes once the table is in


def test_an_interrupted_run_resumes_without_redoing_a_chunk(run, counting_run, small, tmp_path, monkeypatch):
    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", SMALL_BATCH)
    one = single(run, counting_run, small, tmp_path / "one.csv")
    real = pixelreg.archive.cluster.localize_chunk
    done: list[int] = []

    def interrupted_after_two(settings, chunk, folder):
        if len(done) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third chunk is localized
        done.append(chunk.first)
        return real(settings, chunk, folder)

    monkeypatch.setattr(pixelreg.archive.cluster, "localize_chunk", interrupted_after_two)
    out = tmp_path / "locs.csv"
    result = run("predict", counting_run, small, "--out", out, "--resume", "--chunk-frames", 10)
    assert result.exit_code == 130 and "--resume" in result.stderr, result.stderr
    assert result.stderr.startswith("Error: interrupted: 2 of 6 chunks are finished")
    assert not out.exists()
    parts = tmp_path / "locs.csv.parts"
    assert sorted(p.name for p in parts.glob("*.npz")) == ["00000-0000000000.npz", "00000-0000000010.npz"]
    done.clear()
    monkeypatch.setattr(
        pixelreg.archive.cluster, "localize_chunk", lambda *a: (done.append(a[1].first), real(*a))[1]
    )
    again = run("predict", counting_run, small, "--out", out, "--resume", "--chunk-frames", 10)
    assert again.exit_code == 0, again.stderr
    assert done == [20, 30, 40, 50]  # the finished two are not redone
    assert out.read_bytes() == one and not parts.exists()


def test_picasso_tables_assemble_as_in_one_process(run, counting_run, small, tmp_path, monkeypatch):
    import h5py

    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", SMALL_BATCH)
    for name, extra in (("one", []), ("two", ["--resume", "--chunk-frames", 20])):
        result = run(
            "predict",
            counting_run,
            small,
            small,
            "--format",
            "picasso",
            "--out",
            tmp_path / f"{name}.hdf5",
            "-q",
            *extra,
        )
        assert result.exit_code == 0, result.stderr
    with h5py.File(tmp_path / "one.hdf5") as one, h5py.File(tmp_path / "two.hdf5") as two:
        assert len(one["locs"]) > 60 and np.array_equal(one["locs"][...], two["locs"][...])
        assert one["locs"]["frame"].max() >= 60  # the second file's frames numbered on


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0", "--out", "{tmp}/t.csv"], "--workers must be 1 or more"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "--out", "{tmp}/t.csv"], "give one"),
        (["--resume"], "give --out"),
        (["--chunk-frames", "10", "--out", "{tmp}/t.csv"], "applies with --workers"),
        (["--resume", "--chunk-frames", "0", "--out", "{tmp}/t.csv"], "--chunk-frames must be 1 or more"),
    ],
)
def test_impossible_archive_options_are_one_error_line(run, counting_run, small, tmp_path, args, message):
    result = run("predict", counting_run, small, *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_work_folder_is_never_mixed_with_other_work(run, counting_run, small, tmp_path, monkeypatch):
    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", SMALL_BATCH)
    parts = tmp_path / "t.csv.parts"
    parts.mkdir()
    (parts / "plan.json").write_text('{"other": "work"}')
    for extra, message in ((["--workers", 1], "give --resume"), (["--resume"], "made for other work")):
        result = run(
            "predict", counting_run, small, "--out", tmp_path / "t.csv", "--chunk-frames", 10, *extra
        )
        assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv.parts"]


def test_an_unreachable_scheduler_is_one_error_line(run, counting_run, small, tmp_path, monkeypatch):
    monkeypatch.setattr(pixelreg.archive.cluster, "CONNECT_SECONDS", 1)
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    result = run("predict", counting_run, small, "--out", tmp_path / "t.csv", "--scheduler", address)
    assert result.exit_code == 1 and "cannot reach the Dask scheduler" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # no table, and no work folder with nothing in it


@pytest.mark.slow
def test_two_local_workers_give_the_single_process_table(run, counting_run, wide, tmp_path, monkeypatch):
    ten_frame_batches(monkeypatch, 128)
    wide, one = wide
    out = tmp_path / "two.csv"
    result = run("predict", counting_run, wide, "--out", out, "--workers", 2, "--chunk-frames", 1)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == one and one.count(b"\n") > 400
    workers = [line for line in result.stderr.splitlines() if re.match(r"^│ \S+:\d+ ", line)]
    assert len(workers) == 2, result.stderr  # the report: frames/s of each worker


@pytest.mark.slow
def test_a_killed_worker_s_chunk_is_redone_and_the_table_is_the_same(
    run, counting_run, wide, tmp_path, monkeypatch
):
    from distributed import Client, LocalCluster

    ten_frame_batches(monkeypatch, 128)
    wide, one = wide
    out = tmp_path / "locs.csv"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        killed: list[int] = []

        def kill_a_busy_worker() -> None:  # as soon as a worker is at a chunk
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for worker, keys in client.processing().items():
                    if any("pixelreg" in key for key in keys):
                        killed.append(pids[worker])
                        os.kill(pids[worker], signal.SIGKILL)
                        return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        args = ("--out", out, "--scheduler", cluster.scheduler_address, "--chunk-frames", 1)
        result = run("predict", counting_run, wide, *args)
        killer.join()
    assert killed, "no chunk was in flight to kill a worker under"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it died mid-run
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == one


@pytest.mark.slow
def test_workers_started_apart_against_a_loopback_scheduler_give_the_same_table(
    run, counting_run, wide, tmp_path, monkeypatch
):
    ten_frame_batches(monkeypatch, 128)
    wide, one = wide
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen([*scheduler, "--port", str(port), "--no-dashboard"], **quiet)]
    try:
        for _ in range(2):  # as on two machines: separate processes, joined by the network only
            processes.append(subprocess.Popen([*worker, "--no-dashboard"], **quiet))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        out = tmp_path / "locs.csv"
        result = run("predict", counting_run, wide, "--out", out, "--scheduler", address, "--chunk-frames", 1)
        assert result.exit_code == 0, result.stderr
        assert out.read_bytes() == one
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_a_damaged_part_is_one_error_line(run, counting_run, small, tmp_path, monkeypatch):
    monkeypatch.setattr(pixelreg.io.frames, "LOCALIZE_PIXELS", SMALL_BATCH)
    out = tmp_path / "t.csv"
    real = pixelreg.archive.cluster.localize_chunk

    def interrupted_after_one(settings, chunk, folder):
        if chunk.first:
            raise KeyboardInterrupt
        return real(settings, chunk, folder)

    monkeypatch.setattr(pixelreg.archive.cluster, "localize_chunk", interrupted_after_one)
    assert (
        run("predict", counting_run, small, "--out", out, "--resume", "--chunk-frames", 10).exit_code == 130
    )
    monkeypatch.setattr(pixelreg.archive.cluster, "localize_chunk", real)
    part = tmp_path / "t.csv.parts" / "00000-0000000000.npz"
    for damage, message in ((part.read_bytes()[:300], "is damaged"), (b"", "is damaged")):
        part.write_bytes(damage)
        result = run("predict", counting_run, small, "--out", out, "--resume", "--chunk-frames", 10)
        assert result.exit_code == 1 and result.stderr.startswith("Error: ") and message in result.stderr
        assert not out.exists()
    with part.open("wb") as stream:  # another layout: plain floats, not localizations
        np.savez(stream, locs=np.zeros(3), given=np.array([], dtype=str))
    result = run("predict", counting_run, small, "--out", out, "--resume", "--chunk-frames", 10)
    assert result.exit_code == 1 and "another layout" in result.stderr and not out.exists()


def test_a_file_in_the_work_folder_s_place_is_refused(run, counting_run, small, tmp_path):
    (tmp_path / "t.csv.parts").write_text("not a folder")
    for extra in ([], ["--resume"]):
        result = run("predict", counting_run, small, "--out", tmp_path / "t.csv", "--workers", 1, *extra)
        assert result.exit_code == 1 and "is a file, not a work folder" in result.stderr, result.stderr
