"""Speed and memory, measured on this machine in one run: `pixelreg bench perf`."""

from __future__ import annotations

import functools
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelreg.bench.holdouts import images_per_second
from pixelreg.fit.classical import argmax_points
from pixelreg.nn.config import TrainConfig
from pixelreg.nn.inference import images_to_tensor, predict_images, resolve_device
from pixelreg.nn.registry import MODELS, build_model
from pixelreg.nn.train import SilentReporter, train
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import DataSpec


class _Reached(Exception):
    """Raised by the reporter to stop training once the goal is met."""


class _UntilExact(SilentReporter):
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.epoch_reached: int | None = None
        self.seconds: float | None = None

    def epoch(self, row: dict[str, float], best: bool) -> None:
        if row["val_exact"] == 1.0:
            self.epoch_reached, self.seconds = int(row["epoch"]), time.perf_counter() - self.started
            raise _Reached


def training_images_per_second(
    name: str, images: np.ndarray, points: np.ndarray, device: torch.device, steps: int = 40, batch: int = 64
) -> float:
    """Optimisation steps per second of one model, times the batch size."""
    torch.manual_seed(0)
    model = build_model(name, height=images.shape[1], width=images.shape[2]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    y_all = torch.from_numpy(points).to(device)

    def step(i: int) -> None:
        start = (i * batch) % (len(images) - batch)
        x = images_to_tensor(images[start : start + batch], device)
        loss = model.loss(x, y_all[start : start + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(3):  # warm-up
        step(i)
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * batch / (time.perf_counter() - started)


def peak_rss_of_training(n: int, epochs: int = 1) -> float:
    """Peak resident memory (MB) of `pixelreg train --n N` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pixelreg", "train", "--n", str(n), "--epochs", str(epochs)]
        command += ["--out", tmp, "--quiet", "--device", "cpu"]
        subprocess.run(command, check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports kB


def run_perf(device: str = "auto", rss_n: int = 1_000_000) -> dict[str, Any]:
    """Every figure of the performance table."""
    torch_device = resolve_device(device)
    results: dict[str, Any] = {"device": str(torch_device), "threads": torch.get_num_threads()}
    started = time.perf_counter()
    dataset = make_dataset(DataSpec(n=100_000))
    results["generate_images_per_second"] = round(100_000 / (time.perf_counter() - started))
    images, points = dataset.images[:4096], dataset.points[:4096]
    batch = images[:1024]
    results["argmax_images_per_second"] = round(images_per_second(argmax_points, batch))
    models = {}
    for name in MODELS:
        model = build_model(name, height=50, width=50).to(torch_device).eval()
        models[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_images_per_second": round(training_images_per_second(name, images, points, torch_device)),
            "inference_images_per_second": round(
                images_per_second(functools.partial(predict_images, model, device=torch_device), batch)
            ),
        }
    results["models"] = models
    with tempfile.TemporaryDirectory() as tmp:
        reporter = _UntilExact()
        try:
            train(TrainConfig(device=device), Path(tmp) / "run", reporter)
        except _Reached:
            pass
        results["default_train_seconds_to_unseen_exact"] = (
            None if reporter.seconds is None else round(reporter.seconds, 1)
        )
        results["default_train_epochs_to_unseen_exact"] = reporter.epoch_reached
    results["train_peak_rss_mb"] = {"n": rss_n, "epochs": 1, "mb": round(peak_rss_of_training(rss_n))}
    return results
