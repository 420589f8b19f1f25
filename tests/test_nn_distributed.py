"""Two CPU processes under torchrun train the same model as one process does."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["--n", "1200", "--size", "16", "--epochs", "3", "--batch-size", "32", "--device", "cpu", "--quiet"]


def history(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun"
)
def test_two_process_training_matches_one_process(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--nproc-per-node", "2", "--master-port", "29581", "-m", "pixelreg", "--", "train"]
    two = subprocess.run(
        command + ARGS + ["--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.strip() == str(tmp_path / "two" / "train")  # rank 0 alone prints
    one = subprocess.run(
        [sys.executable, "-m", "pixelreg", "train", *ARGS, "--out", str(tmp_path / "one")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    rows_two, rows_one = history(tmp_path / "two" / "train"), history(tmp_path / "one" / "train")
    assert len(rows_two) == len(rows_one) == 3
    for a, b in zip(rows_two, rows_one, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-6), key
    assert rows_two[-1]["val_exact"] == 1.0
