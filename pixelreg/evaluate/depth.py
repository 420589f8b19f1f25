"""Scoring in 3D as the SMLM challenge 2016 scores it (Sage et al., Nature Methods 2019): pairs
within 250 nm laterally and 500 nm axially, the Jaccard index, lateral and axial rmse and their
efficiencies; and precision against the 3D Cramér-Rao bound, depth bin by depth bin."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixelreg.evaluate.matching import (
    AXIAL_ALPHA,
    AXIAL_TOLERANCE_NM,
    PIXEL_SIZE_NM,
    TOLERANCE_PX,
    pair_greedy,
)
from pixelreg.evaluate.metrics import detection_scores, efficiency, rms

DEPTH_BIN_NM = 100.0


@dataclass
class Pairs3D:
    """The paired spots of a 3D scoring: which truth (frame, spot) each is, and its errors."""

    frame: np.ndarray  # (P,) the truths' frames
    spot: np.ndarray  # (P,) and their places in the frame
    lateral: np.ndarray  # (P, 2) predicted - true x, y, px
    axial: np.ndarray  # (P,) predicted - true depth, nm
    true_z: np.ndarray  # (P,) nm

    def subset(self, chosen: np.ndarray) -> Pairs3D:
        """The pairs `chosen` (a mask or indices)."""
        return Pairs3D(
            *(part[chosen] for part in (self.frame, self.spot, self.lateral, self.axial, self.true_z))
        )

    def rmse(self, pixel_size: float = PIXEL_SIZE_NM) -> tuple[float | None, float | None]:
        """Lateral (x and y together) and axial rmse, nm; None of no pairs."""
        return rms(np.linalg.norm(self.lateral, axis=-1) * pixel_size), rms(self.axial)


def score_3d(
    pred: np.ndarray,
    pred_z: np.ndarray,
    true: np.ndarray,
    true_z: np.ndarray,
    pixel_size: float = PIXEL_SIZE_NM,
    tolerance: float = TOLERANCE_PX,
    axial: float = AXIAL_TOLERANCE_NM,
) -> tuple[dict[str, Any], Pairs3D]:
    """The challenge's 3D scores of predictions (N, Kp, 2) at depths `pred_z` (N, Kp, nm) against
    truths (N, Kt, 2) at `true_z` (N, Kt), all NaN-padded: counts, recall, precision, Jaccard
    index, lateral and axial rmse (nm) and the efficiencies (alpha 1 %/nm laterally, 0.5 %/nm
    axially); and the pairs."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    paired = pair_greedy(pred, true, tolerance, (pred_z, true_z), axial)
    scores = detection_scores(pred, true, tolerance, pixel_size, paired)
    frame, spot = np.nonzero(paired >= 0)
    chosen = paired[frame, spot]
    pairs = Pairs3D(
        frame,
        spot,
        pred[frame, chosen] - true[frame, spot],
        np.asarray(pred_z, dtype=np.float64)[frame, chosen] - true_z[frame, spot],
        np.asarray(true_z, dtype=np.float64)[frame, spot],
    )
    lateral, axial_rmse = pairs.rmse(pixel_size)
    jaccard = scores["jaccard"]
    row: dict[str, Any] = {key: scores[key] for key in ("tp", "fp", "fn", "recall", "precision")}
    row["jaccard"] = None if jaccard is None else round(100 * jaccard, 2)
    row["rmse_lateral_nm"] = _round(lateral)
    row["rmse_axial_nm"] = _round(axial_rmse)
    row["efficiency_lateral"] = _round(efficiency(jaccard, lateral))
    row["efficiency_axial"] = _round(efficiency(jaccard, axial_rmse, AXIAL_ALPHA))
    return row, pairs


def by_depth(
    pairs: Pairs3D,
    bound: np.ndarray,
    z_range: tuple[float, float],
    pixel_size: float = PIXEL_SIZE_NM,
    step: float = DEPTH_BIN_NM,
) -> list[dict[str, Any]]:
    """Per depth bin of `step` nm over `z_range` (by the true depth): the pairs' lateral rmse
    (both axes together) and axial rmse, nm, beside the rms of their 3D bounds `bound` (N, Kt, 5
    as `crlb` gives it: x, y, photons, background, z) and the ratios; and the mean axial error
    (the bias of z), with its standard error."""
    edges = np.arange(z_range[0], z_range[1] + step / 2, step)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (pairs.true_z >= low) & (pairs.true_z < high if high < edges[-1] else pairs.true_z <= high)
        if not inside.any():
            continue
        chosen = pairs.subset(inside)
        count = len(chosen.axial)
        rows.append(
            {
                "z_nm": round(float((low + high) / 2), 1),
                "spots": count,
                **against_bound(chosen, bound, pixel_size),
                "bias_z_nm": round(float(chosen.axial.mean()), 2),
                "bias_z_error_nm": round(float(chosen.axial.std() / math.sqrt(count)), 2),
            }
        )
    return rows


def against_bound(pairs: Pairs3D, bound: np.ndarray, pixel_size: float = PIXEL_SIZE_NM) -> dict[str, Any]:
    """The pairs' lateral and axial rmse (nm) beside the rms of their truths' 3D bounds `bound`
    (N, Kt, 5 as `crlb` gives it: x, y, photons, background, z), and the ratios."""
    spot_bound = bound[pairs.frame, pairs.spot]
    lateral, axial = pairs.rmse(pixel_size)
    lateral_bound = rms(np.hypot(spot_bound[:, 0], spot_bound[:, 1]) * pixel_size)
    axial_bound = rms(spot_bound[:, 4])
    return {
        "rmse_lateral_nm": _round(lateral),
        "bound_lateral_nm": _round(lateral_bound),
        "lateral_over_bound": _ratio(lateral, lateral_bound),
        "rmse_axial_nm": _round(axial),
        "bound_axial_nm": _round(axial_bound),
        "axial_over_bound": _ratio(axial, axial_bound),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ratio(value: float | None, bound: float | None) -> float | None:
    return None if value is None or not bound else round(value / bound, 3)
