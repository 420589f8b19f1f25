"""What each localization is worth, and how evaluation checks it: photons, background
and an uncertainty per spot, scored against the truth and the Poisson bound, photon decile by
photon decile."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pixelreg.evaluate.metrics import as_json_float
from pixelreg.fit.bounds import crlb
from pixelreg.fit.photometry import measure_spots
from pixelreg.simulate.render import Photometry
from pixelreg.simulate.spec import DataSpec

DECILES = 10
BOUND_RATIO_GOAL = 1.1  # the goal: rmse within this many times the bound in every photon decile
BIAS_GOAL_PX = 0.01
CALIBRATION_GOAL = 0.10  # the spread of error / uncertainty within this of 1


def true_bounds(true: np.ndarray, photometry: Photometry, spec: DataSpec) -> np.ndarray:
    """(N, K, 5) the bound on each parameter of each spot at its true values, every parameter
    unknown but sigma (unknown too when blur varies); through a sampled PSF, every parameter
    unknown but the depth."""
    present = np.isfinite(true).all(-1)
    where = np.where(present[..., None], true, 0.0)
    background = np.broadcast_to(photometry.background[:, None], present.shape)
    psf = spec.sampled_psf  # through it, the spots' own depths are known to the bound
    free = (True, True, True, True, psf is None and spec.blur_max is not None)
    z = spec.middle_z if photometry.z is None else photometry.z
    bound = crlb(
        where, photometry.photons, background, photometry.sigma, spec.camera, spec.size, free, psf, z
    )
    return np.where(present[..., None], bound, np.nan)


def measured(
    images: np.ndarray, points: np.ndarray, spec: DataSpec, z: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Photons, background, sigma and uncertainty at each point of photon images, through the
    spec's PSF: a sampled one at each spot's depth `z` (N, K) nm as a 3D model reads it, or
    without, at the middle of the spec's depths."""
    psf = spec.sampled_psf
    shape = spec.mean_blur if psf is None else (spec.middle_z if z is None else z)
    return measure_spots(images, points, shape, spec.camera, spec.blur_max is not None, psf)


def photometry_report(
    methods: dict[str, np.ndarray],
    true: np.ndarray,
    photometry: Photometry,
    images: np.ndarray,
    spec: DataSpec,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per method (name -> points (N, K, 2) paired with `true`): rmse against the Poisson bound
    in each decile of true photons, bias, calibration of the reported uncertainty, and the error
    of the photons and background measured at its points. Also the per-spot arrays for figures."""
    bound = true_bounds(true, photometry, spec)
    present = np.isfinite(true).all(-1)
    photons = photometry.photons[present]
    edges = np.quantile(photons, np.linspace(0, 1, DECILES + 1))
    decile = np.clip(np.searchsorted(edges, photons, side="right") - 1, 0, DECILES - 1)
    bound_sq = (bound[..., 0] ** 2 + bound[..., 1] ** 2)[present]
    report: dict[str, Any] = {
        "deciles": {
            "photons_from": [as_json_float(v) for v in edges[:-1]],
            "photons_to": [as_json_float(v) for v in edges[1:]],
            "spots": [int((decile == d).sum()) for d in range(DECILES)],
            "bound_px": [_root_mean(bound_sq[decile == d]) for d in range(DECILES)],
        },
        "bound_px": _root_mean(bound_sq),
        "photons_bound_relative": _root_mean(((bound[..., 2] / photometry.photons) ** 2)[present]),
        "methods": {},
    }
    arrays: dict[str, np.ndarray] = {"bound_px": np.sqrt(bound_sq), "true_photons": photons}
    background = np.broadcast_to(photometry.background[:, None], present.shape)[present]
    for name, points in methods.items():
        error = (points - true)[present]  # (M, 2)
        found = measured(images, points, spec)
        squared = (error**2).sum(-1)
        unc = found["uncertainty"][present]
        scaled = error / unc[:, None]
        rmse = [_root_mean(squared[decile == d]) for d in range(DECILES)]
        ratios = [
            None if r is None or b is None else as_json_float(r / b)
            for r, b in zip(rmse, report["deciles"]["bound_px"], strict=True)
        ]
        bias = error.mean(0)
        spread = [as_json_float(np.std(scaled[:, axis])) for axis in (0, 1)]
        relative = (found["photons"][present] - photons) / photons
        block = {
            "rmse_px": _root_mean(squared),
            "rmse_over_bound": as_json_float(_root_mean(squared) / report["bound_px"]),
            "decile_rmse_px": rmse,
            "decile_rmse_over_bound": ratios,
            "bias_px": {"x": as_json_float(bias[0]), "y": as_json_float(bias[1])},
            "error_over_uncertainty_std": {"x": spread[0], "y": spread[1]},
            "photons_rmse_relative": _root_mean(relative**2),
            "photons_bias_relative": as_json_float(relative.mean()),
            "background_rmse": _root_mean((found["background"][present] - background) ** 2),
        }
        report["methods"][name] = block
        arrays[f"{name}_error"] = error
        arrays[f"{name}_uncertainty"] = unc
        arrays[f"{name}_photons"] = found["photons"][present]
    report["goal"] = photometry_goal(report)
    return report, arrays


def photometry_goal(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's goal for the model: within BOUND_RATIO_GOAL of the bound in every decile, no
    worse than the Poisson fit, unbiased to BIAS_GOAL_PX, calibrated to CALIBRATION_GOAL."""
    model = report["methods"].get("model")
    if model is None:
        return {}
    ratios = [r for r in model["decile_rmse_over_bound"] if r is not None]
    fit = report["methods"].get("poisson_mle")
    spread = [v for v in model["error_over_uncertainty_std"].values() if v is not None]
    return {
        "every_decile_within_bound_ratio": bool(ratios) and max(ratios) <= BOUND_RATIO_GOAL,
        "worst_decile_ratio": max(ratios) if ratios else None,
        "not_worse_than_poisson_mle": fit is None or model["rmse_px"] <= fit["rmse_px"],
        "unbiased": max(abs(v) for v in model["bias_px"].values()) <= BIAS_GOAL_PX,
        "calibrated": bool(spread) and all(abs(v - 1) <= CALIBRATION_GOAL for v in spread),
    }


def _root_mean(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return as_json_float(math.sqrt(values.mean())) if values.size else None
