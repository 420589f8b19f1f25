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
def checkpoint_of() -> Callable[..., Path]:
    """`checkpoint_of(path, camera=True)`: an untrained but loadable checkpoint of a counting
    offsets model of 16x16 frames, of a camera's counts (`--photons`) or of grey levels, in
    milliseconds: for the tests of what a model of each kind accepts."""
    from pixelreg.io.checkpoints import save_checkpoint
    from pixelreg.nn.registry import build_model
    from pixelreg.simulate.spec import DataSpec

    def make(path: Path, camera: bool = True, counting: bool = True) -> Path:
        light = {"photons": 1000.0, "photons_max": 3000.0, "background_photons": 10.0} if camera else {}
        spec = DataSpec(
            height=16,
            width=16,
            points=0 if counting else 1,
            points_max=3 if counting else None,
            blur=1.0,
            **light,
        )
        args = {
            "height": 16,
            "width": 16,
            "points": 3 if counting else 1,
            **({"counting": True} if counting else {}),
        }
        model = build_model("offsets", **args)
        payload = {
            "model": "offsets",
            "model_args": args,
            "state_dict": model.state_dict(),
            "data_spec": spec.to_dict(),
            "epoch": 1,
        }
        return save_checkpoint(path, payload)

    return make


@pytest.fixture(scope="session")
def run() -> Callable[..., Any]:
    """`run("train", "--epochs", 3)`: the command line through Typer's CliRunner, every argument
    as text; the result has exit_code, stdout and stderr."""
    runner = CliRunner()

    def invoke(*args: object) -> Any:
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def counting_run(run: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A counting model trained for a few epochs on 16x16 images of 0 to 3 blurred spots."""
    out = tmp_path_factory.mktemp("counting")
    options = ["--size", 16, "--points", "0:3", "--blur", 1, "--noise", 3, "--background", 20]
    options += ["--brightness", 400, "--subpixel", "--n", 1200, "--seed", 4, "--epochs", 5]
    result = run("train", *options, "--batch-size", 32, "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    return out / "train"
