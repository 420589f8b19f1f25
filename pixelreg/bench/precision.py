"""`pixelreg bench precision`: every method against the Cramér-Rao bound over a grid of blur
and brightness, with sub-pixel spots in camera-like noise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.bench.defaults import (
    AT_BOUND,
    PRECISION_BLURS,
    PRECISION_BRIGHTNESSES,
    PRECISION_CONDITIONS,
    PRECISION_EPOCHS,
    PRECISION_MODELS,
)
from pixelreg.errors import PixelregError
from pixelreg.evaluate.files import Evaluation
from pixelreg.evaluate.matching import MATCH_RADIUS_PX
from pixelreg.evaluate.report import evaluate_model
from pixelreg.io.checkpoints import load_model
from pixelreg.nn.config import TrainConfig
from pixelreg.nn.inference import resolve_device
from pixelreg.nn.train import Reporter, train
from pixelreg.simulate.spec import DataSpec


@dataclass
class Trained:
    """A model trained in one cell: its evaluation on the cell's test spots, and at what cost."""

    evaluation: Evaluation
    seconds: float
    config: dict[str, Any]


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

    One row per (cell, method): rmse over every spot, over the spots it found within 1 px,
    and over the spots that every model and the Gaussian fit found (`rmse_common_px`: the
    fair comparison where spots are lost, since losing the hard ones flatters `rmse_hits`),
    each also as a multiple of the bound; `bias_px` (pixel locking) and training seconds.
    """
    out = Path(out)
    torch_device = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for blur in blurs:
        for brightness in brightnesses:
            data_spec = cell_spec(spec, blur, brightness)
            evaluations: dict[str, Trained] = {}
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
                evaluation = evaluate_model(
                    model, payload, str(result.best_path), device=torch_device, sweep=False
                )
                evaluations[name] = Trained(evaluation, seconds, asdict(config))
            rows.extend(score_cell({"blur": blur, "brightness": brightness}, evaluations))
    results = {
        "conditions": PRECISION_CONDITIONS,
        "spec": spec.to_dict(),
        "epochs": epochs,
        "at_bound": AT_BOUND,
        "rows": rows,
    }
    results["verdicts"] = {name: verdicts(results, name) for name in models}
    return results


def score_cell(cell: dict[str, float], evaluations: dict[str, Trained]) -> list[dict[str, Any]]:
    """The rows of one cell: each model, then the classical methods (the same test spots)."""
    first = next(iter(evaluations.values())).evaluation
    true = first.predictions["true"]
    bound = first.report["crlb"]
    crlb = bound["crlb_px"] if bound else None
    errors: dict[str, np.ndarray] = {}  # method -> (spots,) distance of its estimate
    metrics: dict[str, dict[str, Any]] = {}
    for name, trained in evaluations.items():
        evaluation = trained.evaluation
        if not np.array_equal(evaluation.predictions["true"], true):
            raise PixelregError("the runs of one cell were tested on different spots")
        errors[name] = np.linalg.norm(evaluation.predictions["pred"] - true, axis=-1).ravel()
        metrics[name] = evaluation.report["metrics"]["all"]
    for baseline, found in first.report["baselines"].items():
        errors[baseline] = np.linalg.norm(first.predictions[f"baseline_{baseline}"] - true, axis=-1).ravel()
        metrics[baseline] = found
    judged = [*evaluations, *(["gaussian_fit"] if "gaussian_fit" in errors else [])]
    common = np.logical_and.reduce([errors[name] <= MATCH_RADIUS_PX for name in judged])

    def over_bound(value: float | None) -> float | None:
        return None if value is None or not crlb else round(value / crlb, 4)

    rows = []
    for method, error in errors.items():
        m = metrics[method]
        rmse_common = float(np.sqrt(np.mean(error[common] ** 2))) if common.any() else None
        in_grid = evaluations.get(method)
        rows.append(
            {
                **cell,
                "method": method,
                "crlb_px": crlb,
                "rmse_px": m["rmse_px"],
                "rmse_over_crlb": over_bound(m["rmse_px"]),
                "rmse_hits_px": m["rmse_hits_px"],
                "rmse_hits_over_crlb": over_bound(m["rmse_hits_px"]),
                "rmse_common_px": None if rmse_common is None else round(rmse_common, 6),
                "rmse_common_over_crlb": over_bound(rmse_common),
                "common_share": round(float(common.mean()), 6),
                "recall_1px": m["recall_1px"],
                "bias_px": m["bias_px"],
                "train_seconds": None if in_grid is None else round(in_grid.seconds, 1),
                "config": None if in_grid is None else in_grid.config,
            }
        )
    return rows


def verdicts(results: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """Per cell: whether `model` is at the bound (within `at_bound` times it), at least as
    precise as the Gaussian fit, and below the bound.

    Where the model or the fit loses spots (recall under 100%), rmse over every spot is
    dominated by the lost ones, so the comparison with the fit is made over the spots that
    both found (`rmse_common_px`).
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
        key = "rmse_px" if complete else "rmse_common_px"
        found.append(
            {
                "blur": blur,
                "brightness": brightness,
                "compared_on": key,
                "at_bound": ours["rmse_over_crlb"] is not None
                and ours["rmse_over_crlb"] <= results["at_bound"],
                "beats_fit": ours[key] is not None and fit[key] is not None and ours[key] <= fit[key],
                "margin_over_fit": None if not fit[key] else round(ours[key] / fit[key] - 1.0, 4),
                # an estimator that knows the prior of its training data may beat the bound on
                # unbiased estimators: by this share of it, where it does (over every spot)
                "below_bound_by": None
                if ours["rmse_over_crlb"] is None or ours["rmse_over_crlb"] >= 1.0
                else round(1.0 - ours["rmse_over_crlb"], 4),
            }
        )
    return found
