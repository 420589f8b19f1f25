"""A model's precision against the Cramér-Rao bound: on its test spots, and over noise levels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pixelreg.evaluate.matching import match_points
from pixelreg.evaluate.metrics import (
    as_json_float,
    summarize,
)
from pixelreg.fit.bounds import crlb_px
from pixelreg.fit.classical import BASELINES, baseline_points
from pixelreg.fit.defaults import MIN_BOUND_BLUR
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.inference import (
    predict_images,
)
from pixelreg.simulate.coords import present_points
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import DataSpec

BOUND_SPOTS = 5000  # spots whose isolated-spot bound is averaged, with a variable count


def precision_against_bound(
    report: dict[str, Any], true: np.ndarray, spec: DataSpec, bound: float | None = None
) -> dict[str, Any] | None:
    """The Cramér-Rao bound for these spots and each method's RMSE as a multiple of it.

    With a variable count the bound is that of each spot alone in its image (the
    isolated-spot bound), over the pairs' rmse: neighbours can only raise the true bound.
    Under the camera model the caller gives the Poisson bound of these spots.
    """
    if bound is not None:
        return over_bound(report, bound)
    if spec.variable_count:
        alone = present_points(true)[:, None, :]
        rng = np.random.default_rng(0)  # the bound of a few thousand spots is the bound to 1%
        alone = alone[rng.permutation(len(alone))[:BOUND_SPOTS]]
        true, spec = alone, spec.with_(points=1, points_max=None)
    if spec.noise <= 0 or true.shape[1] != 1 or len(true) == 0:
        return None  # noise-free or several spots: no bound computed
    bound = crlb_px(true, spec)
    if not math.isfinite(bound):
        return None  # too little blur for a meaningful bound
    return over_bound(report, bound)


def over_bound(report: dict[str, Any], bound: float) -> dict[str, Any]:
    methods = {"model": report["metrics"]["all"], **report["baselines"]}
    return {
        "crlb_px": as_json_float(bound),
        "rmse_over_crlb": {
            name: as_json_float(m["rmse_px"] / bound) if m["rmse_px"] is not None else None
            for name, m in methods.items()
        },
        "rmse_hits_over_crlb": {
            name: as_json_float(m["rmse_hits_px"] / bound) if m["rmse_hits_px"] is not None else None
            for name, m in methods.items()
        },
    }


def wants_precision_curve(spec: DataSpec | None) -> bool:
    """Whether a model trained on `spec` gets the precision-against-noise figure."""
    return spec is not None and spec.noise > 0 and spec.blur >= MIN_BOUND_BLUR


def precision_curve(
    model: PointModel,
    spec: DataSpec,
    device: torch.device | str = "cpu",
    n: int = 500,
    factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0),
) -> dict[str, Any]:
    """Model, baselines and the Cramér-Rao bound over noise levels around the spec's own.

    Fresh single-spot test images at each level, from a seed apart from the training data.
    The model is the one trained at `spec.noise`: it is not retrained per level.
    """
    curve: dict[str, Any] = {"trained_noise": spec.noise, "noise": [], "crlb_px": [], "methods": {}}
    for factor in factors:
        level_spec = spec.with_(
            noise=spec.noise * factor, points=1, n=n, holdout="none", seed=spec.seed + 7919
        )
        dataset = make_dataset(level_spec)
        true = dataset.points
        predictions = {"model": match_points(predict_images(model, dataset.images, device), true)}
        for name in BASELINES:
            predictions[name] = baseline_points(name, dataset.images, 1, level_spec)
        curve["noise"].append(level_spec.noise)
        curve["crlb_px"].append(crlb_px(true, level_spec))
        for name, pred in predictions.items():
            m = summarize(pred, true, *level_spec.size)
            entry = curve["methods"].setdefault(name, {"rmse_px": [], "rmse_hits_px": [], "recall_1px": []})
            for key in entry:
                entry[key].append(m[key])
    return curve
