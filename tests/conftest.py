"""Shared fixtures: the command line as a user calls it, and one small trained run, reused by
the tests that only read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pixelreg.cli import app
from pixelreg.nn.train import TrainConfig, train

SMALL_SPEC = {"n": 800, "height": 16, "width": 16, "holdout": "quadrant", "seed": 3}
SMALL_EPOCHS = 4  # enough for every training seed we tried to be within 0.01 px on the unseen quadrant


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A heatmap model trained for a few epochs on 16x16 images with a held-out quadrant."""
    run_dir = tmp_path_factory.mktemp("runs") / "small"
    config = TrainConfig(
        model="heatmap", epochs=SMALL_EPOCHS, batch_size=32, seed=0, device="cpu", spec=dict(SMALL_SPEC)
    )
    train(config, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def run() -> Callable[..., Any]:
    """`run("train", "--epochs", 3)`: the command line through Typer's CliRunner, every argument
    as text; the result has exit_code, stdout and stderr."""
    runner = CliRunner()

    def invoke(*args: object) -> Any:
        return runner.invoke(app, [str(a) for a in args])

    return invoke
