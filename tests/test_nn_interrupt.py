"""Real signals sent to a real `python -m pixelreg train` process."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pixelreg.io.checkpoints import load_checkpoint


def start_training(out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "pixelreg", "train", "--n", "2000", "--size", "20", "--epochs", "40"]
    command += ["--batch-size", "32", "--out", str(out), "--device", "cpu", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(process: subprocess.Popen, epoch: int) -> None:
    for line in process.stderr:
        if line.startswith("epoch") and int(line.split()[1].split("/")[0]) >= epoch:
            return
    raise AssertionError("training ended before the expected epoch")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_training_cleanly_and_resume_finishes_it(tmp_path, sig):
    process = start_training(tmp_path)
    wait_for_epoch(process, 1)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    last = tmp_path / "train" / "last.pt"
    assert f"Resume with: pixelreg train --resume {last}" in stderr
    assert "Traceback" not in stderr and stdout == ""
    stopped_at = load_checkpoint(last)["epoch"]
    assert 1 <= stopped_at < 40
    if sig == signal.SIGINT:
        resumed = subprocess.run(
            [sys.executable, "-m", "pixelreg", "train", "--resume", str(last), "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() == str(tmp_path / "train")
        with open(tmp_path / "train" / "history.csv") as handle:
            assert [int(row["epoch"]) for row in csv.DictReader(handle)] == list(range(1, 41))
        again = subprocess.run(
            [sys.executable, "-m", "pixelreg", "train", "--resume", str(last)], capture_output=True, text=True
        )
        assert again.returncode == 0
        assert "already finished" in again.stderr


@pytest.mark.slow
def test_kill_9_never_leaves_a_truncated_file(tmp_path):
    process = start_training(tmp_path)
    wait_for_epoch(process, 2)
    process.kill()
    process.communicate(timeout=60)
    run_dir = tmp_path / "train"
    assert load_checkpoint(run_dir / "last.pt")["epoch"] >= 2
    assert load_checkpoint(run_dir / "best.pt")["epoch"] >= 1
    with open(run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 2 and all(row["seconds"] for row in rows)
