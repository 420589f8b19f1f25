"""`pixelreg bench --precision`: every method against the Cramér-Rao bound over a grid of blur
and brightness, with sub-pixel spots in camera-like noise (issue 11)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .checkpoint import load_model
from .config import (
    AT_BOUND,
    PRECISION_BLURS,
    PRECISION_BRIGHTNESSES,
    PRECISION_CONDITIONS,
    PRECISION_EPOCHS,
    PRECISION_MODELS,
    TrainConfig,
)
from .data import DataSpec
from .evaluate import evaluate_model
from .inference import resolve_device
from .train import Reporter, train


def cell_spec(spec: DataSpec, blur: float, brightness: float) -> DataSpec:
    """The data of one cell of the grid; size, count and seed come from `spec`."""
    return spec.with_(blur=blur, brightness=brightness, points=1, **PRECISION_CONDITIONS)


def run_precision(
    out: str | Path,
    spec: DataSpec,
    epochs: int = PRECISION_EPOCHS,
    models: tuple[str, ...] = PRECISION_MODELS,
    device: str = "auto",
    blurs: tuple[float, ...] = PRECISION_BLURS,
    brightnesses: tuple[float, ...] = PRECISION_BRIGHTNESSES,
    reporter_for: Callable[[str], Reporter | None] = lambda label: None,
) -> dict[str, Any]:
    """Train each model in each cell and evaluate it beside the classical baselines.

    One row per (cell, method): rmse over every spot and over the spots found within 1 px,
    each also as a multiple of the bound, `bias_px` (pixel locking) and training seconds.
    """
    out = Path(out)
    torch_device = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for blur in blurs:
        for brightness in brightnesses:
            data_spec = cell_spec(spec, blur, brightness)
            cell = {"blur": blur, "brightness": brightness}
            classical: list[dict[str, Any]] = []
            for name in models:
                label = f"blur {blur:g}, brightness {brightness:g}: {name}"
                config = TrainConfig(
                    model=name, epochs=epochs, seed=spec.seed, device=device, spec=data_spec.to_dict()
                )
                started = time.perf_counter()
                result = train(
                    config, out / f"blur{blur:g}-brightness{brightness:g}-{name}", reporter_for(label)
                )
                seconds = time.perf_counter() - started
                model, payload = load_model(result.best_path, torch_device)
                report = evaluate_model(
                    model, payload, str(result.best_path), device=torch_device, sweep=False
                ).report
                bound = report["crlb"]
                rows.append(_row(cell, name, report["metrics"]["all"], bound, seconds, asdict(config)))
                classical = [  # the same test spots in every run of the cell
                    _row(cell, baseline, metrics, bound, None, None)
                    for baseline, metrics in report["baselines"].items()
                ]
            rows.extend(classical)
    return {
        "conditions": PRECISION_CONDITIONS,
        "spec": spec.to_dict(),
        "epochs": epochs,
        "at_bound": AT_BOUND,
        "rows": rows,
    }


def _row(
    cell: dict[str, float],
    method: str,
    metrics: dict[str, Any],
    bound: dict[str, Any] | None,
    train_seconds: float | None,
    config: dict[str, Any] | None,
) -> dict[str, Any]:
    crlb = bound["crlb_px"] if bound else None

    def over_bound(value: float | None) -> float | None:
        return None if value is None or not crlb else round(value / crlb, 4)

    return {
        **cell,
        "method": method,
        "crlb_px": crlb,
        "rmse_px": metrics["rmse_px"],
        "rmse_over_crlb": over_bound(metrics["rmse_px"]),
        "rmse_hits_px": metrics["rmse_hits_px"],
        "rmse_hits_over_crlb": over_bound(metrics["rmse_hits_px"]),
        "recall_1px": metrics["recall_1px"],
        "bias_px": metrics["bias_px"],
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "config": config,
    }


def verdicts(results: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """Per cell: whether `model` is at the bound and at least as precise as the Gaussian fit.

    Where the model or the fit loses spots (recall under 100%), rmse over every spot is
    dominated by the lost ones, so the comparison with the fit is made over the spots found.
    """
    cells: dict[tuple[float, float], dict[str, dict[str, Any]]] = {}
    for row in results["rows"]:
        cells.setdefault((row["blur"], row["brightness"]), {})[row["method"]] = row
    found = []
    for (blur, brightness), methods in cells.items():
        if model not in methods or "gaussian_fit" not in methods:
            continue
        ours, fit = methods[model], methods["gaussian_fit"]
        complete = ours["recall_1px"] == 1.0 and fit["recall_1px"] == 1.0
        key = "rmse_px" if complete else "rmse_hits_px"
        found.append(
            {
                "blur": blur,
                "brightness": brightness,
                "compared_on": key,
                "at_bound": ours["rmse_over_crlb"] is not None
                and ours["rmse_over_crlb"] <= results["at_bound"],
                "beats_fit": ours[key] is not None and fit[key] is not None and ours[key] <= fit[key],
                "margin_over_fit": None if not fit[key] else round(ours[key] / fit[key] - 1.0, 4),
            }
        )
    return found
