"""Every model, trained and evaluated on the same data with the same budget, beside argmax."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.bench.defaults import BENCH_EPOCHS, BENCH_HOLDOUTS
from pixelreg.evaluate.metrics import summarize
from pixelreg.evaluate.report import evaluate_model
from pixelreg.fit.classical import argmax_points
from pixelreg.io.checkpoints import load_model
from pixelreg.nn.config import MODEL_NAMES, TrainConfig
from pixelreg.nn.inference import predict_images, resolve_device
from pixelreg.nn.train import Reporter, train
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.render import every_position
from pixelreg.simulate.spec import DataSpec


def images_per_second(
    predict: Callable[[np.ndarray], Any], images: np.ndarray, min_seconds: float = 0.5
) -> float:
    """Throughput of `predict` over `images`, repeated until `min_seconds` have passed."""
    predict(images[: min(len(images), 64)])  # warm-up
    done, started = 0, time.perf_counter()
    while True:
        predict(images)
        done += len(images)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def _rows(
    out: str | Path,
    spec: DataSpec,
    epochs: int,
    models: tuple[str, ...],
    holdouts: tuple[str, ...],
    device: str,
    reporter_for: Callable[[str], Reporter | None],
) -> list[dict[str, Any]]:
    """Train (with the spec's seed) and evaluate each model under each holdout; one result row
    per (holdout, model), after argmax's."""
    out = Path(out)
    torch_device = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for holdout in holdouts:
        holdout_spec = spec.with_(holdout=holdout)
        dataset = make_dataset(holdout_spec, ("test",))
        test = dataset.select("test")
        test_images = dataset.images[test]
        rows.append(_argmax_row(holdout, dataset, test_images))
        for name in models:
            config = TrainConfig(
                model=name, epochs=epochs, seed=spec.seed, device=device, spec=holdout_spec.to_dict()
            )
            started = time.perf_counter()
            result = train(config, out / f"{holdout}-{name}", reporter_for(f"{holdout}/{name}"))
            train_seconds = time.perf_counter() - started
            model, payload = load_model(result.best_path, torch_device)
            evaluation = evaluate_model(model, payload, str(result.best_path), device=torch_device)
            speed = images_per_second(
                functools.partial(predict_images, model, device=torch_device),
                _batch_of(test_images, 1024),
            )
            report = evaluation.report
            rows.append(
                {
                    "holdout": holdout,
                    "model": name,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "train_seconds": round(train_seconds, 1),
                    "unseen_mean_px": report["metrics"]["unseen"]["mean_px"],
                    "unseen_exact": report["metrics"]["unseen"]["exact"],
                    "all_positions_exact": report.get("positions", {}).get("all", {}).get("exact"),
                    "images_per_second": round(speed),
                    "config": asdict(config),
                }
            )
    return rows


def _batch_of(images: np.ndarray, size: int) -> np.ndarray:
    return np.resize(images, (size, *images.shape[1:])) if len(images) else images


def _argmax_row(holdout: str, dataset: Any, test_images: np.ndarray) -> dict[str, Any]:
    height, width = dataset.size
    test = dataset.select("test")
    metrics = summarize(argmax_points(test_images), dataset.points[test], height, width)
    every, truth = every_position(dataset.spec)
    return {
        "holdout": holdout,
        "model": "argmax",
        "parameters": 0,
        "train_seconds": 0.0,
        "unseen_mean_px": metrics["mean_px"],
        "unseen_exact": metrics["exact"],
        "all_positions_exact": summarize(argmax_points(every), truth, height, width)["exact"],
        "images_per_second": round(images_per_second(argmax_points, _batch_of(test_images, 1024))),
        "config": None,
    }


def run_holdouts(
    out: str | Path,
    spec: DataSpec,
    epochs: int = BENCH_EPOCHS,
    models: tuple[str, ...] = MODEL_NAMES,
    holdouts: tuple[str, ...] = BENCH_HOLDOUTS,
    device: str = "auto",
    reporter_for: Callable[[str], Reporter | None] = lambda label: None,
) -> dict[str, Any]:
    """The bench's results as bench.json holds them: its spec, budget and one row per model and
    holdout (and argmax's)."""
    rows = _rows(out, spec, epochs, models, holdouts, device, reporter_for)
    return {"spec": spec.to_dict(), "epochs": epochs, "rows": rows}
