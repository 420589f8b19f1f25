"""The camera half of `calibrate`: its baseline, gain and read noise, from how its background
pixels vary over time (their cumulants, which the Poisson and EM-gain statistics fix), and
the estimate type that `calibrate` reports each value with."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pixelreg.errors import PixelregError

LEAST_FRAMES = 20  # fewer frames: a pixel's cumulants over time are too noisy for the gain


SLOPE_PRECISION = 0.2  # the mean-variance line gives the gain unless its slope is less precise than this


LEVEL_RADIUS = 2  # px: a pixel's expected level is the mean of the pixels this near


GAIN_PRECISION = 0.10  # otherwise k4 / k3 must be this precise, or the default gain is used


EM_MOMENTS = (2.0, 6.0, 24.0)  # n! : the cumulants of a Poisson sum of exponential bursts


POISSON_MOMENTS = (1.0, 1.0, 1.0)


ROUNDING = (1 / 12, 0.0, -1 / 120)  # what rounding to integer ADU adds to k2, k3, k4


@dataclass
class Estimate:
    """One estimated parameter: its value, how it was found, and its spread where known."""

    value: float
    how: str  # "estimated", "given" or "default"
    spread: float | None = None  # a standard error or the spread of the fits
    note: str = ""


def _k_statistics(frames: np.ndarray, quiet: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per pixel, over its `quiet` frames: the sample count, and unbiased estimates of the first
    four cumulants (k-statistics) of its values, float64 (H, W) each."""
    n = quiet.sum(0).astype(np.float64)
    total = np.zeros(n.shape)
    for start in range(0, len(frames), 16):
        total += np.where(quiet[start : start + 16], frames[start : start + 16], 0).sum(0, dtype=np.float64)
    mean = total / np.maximum(n, 1)
    central = [np.zeros(n.shape) for _ in range(3)]
    for start in range(0, len(frames), 16):
        deviation = np.where(quiet[start : start + 16], frames[start : start + 16] - mean, 0.0)
        for power, sums in zip((2, 3, 4), central, strict=True):
            sums += (deviation**power).sum(0)
    m2, m3, m4 = (sums / np.maximum(n, 1) for sums in central)
    with np.errstate(divide="ignore", invalid="ignore"):
        k2 = n / (n - 1) * m2
        k3 = n**2 / ((n - 1) * (n - 2)) * m3
        k4 = n**2 * ((n + 1) * m4 - 3 * (n - 1) * m2**2) / ((n - 1) * (n - 2) * (n - 3))
    return n, mean, k2, k3, k4


def _binned(k1: np.ndarray, k2: np.ndarray, bins: int = 24) -> np.ndarray:
    """(bins, 2): the mean level and variance of pixels in equal-count bins of their level."""
    groups = np.array_split(np.argsort(k1), min(bins, len(k1)))
    return np.array([[k1[g].mean(), k2[g].mean()] for g in groups if len(g)])


def _grouped(
    values: Sequence[np.ndarray], estimator: Callable[..., float], groups: int = 8
) -> tuple[float, float]:
    """An estimate over all pixels and its standard error, from `groups` random groups of them."""
    whole = estimator(*values)
    order = np.random.default_rng(0).permutation(len(values[0]))
    parts = [estimator(*(v[part] for v in values)) for part in np.array_split(order, groups)]
    return whole, float(np.std(parts, ddof=1) / math.sqrt(groups))


def camera_estimates(
    frames: np.ndarray,
    mask: np.ndarray,
    moments: tuple[float, float, float],
    baseline: float | None,
    e_per_adu: float | None,
    em_gain: float,
    warnings: list[str],
) -> tuple[np.ndarray, tuple[float, float], Estimate, Estimate, Estimate]:
    """The mean-variance points of the background pixels (bins, 2), the line through them,
    theta (ADU per photoelectron), the baseline and the read noise's variance (ADU^2)."""
    a2, a3, a4 = moments
    gain = em_gain if em_gain > 1.0 else 1.0
    if len(frames) < 4:  # a pixel's fourth cumulant needs 4 values
        if baseline is None or e_per_adu is None:
            raise PixelregError(
                f"{len(frames)} frame(s) are too few to measure the camera; give --baseline and "
                f"--e-per-adu, or at least {LEAST_FRAMES} frames"
            )
        warnings.append(f"read noise: not estimated (only {len(frames)} frames); 0 is used")
        count = (~mask).sum(0)
        level = np.where(mask, 0, frames).sum(0, dtype=np.float64)[count > 0] / count[count > 0]
        levels = _binned(level, np.full(level.shape, math.nan))
        theta, base = Estimate(gain / e_per_adu, "given"), Estimate(float(baseline), "given")
        return levels, (math.nan, math.nan), theta, base, Estimate(0.0, "default", note="too few frames")
    n, k1, k2, k3, k4 = _k_statistics(frames, ~mask)
    usable = (n >= max(4, 0.3 * len(frames))) & np.isfinite(k4)
    if usable.sum() < 100:
        raise PixelregError(
            f"too few background pixels to measure the camera ({int(usable.sum())}; a stack of at "
            f"least {LEAST_FRAMES} frames with spots on a part of the field is needed)"
        )
    local = local_level(k1, usable)[usable]
    n, k1, k2, k3, k4 = n[usable], k1[usable], k2[usable] - ROUNDING[0], k3[usable], k4[usable] - ROUNDING[2]
    levels = _binned(local, k2)
    slope, slope_error = _grouped((local, k2), _line_slope)
    intercept = float(k2.mean() - slope * local.mean())
    ratio, ratio_error = _grouped(
        (k3, k4), lambda x, y: float(a3 / a4 * y.mean() / x.mean()) if x.mean() > 0 else math.nan
    )
    short = len(frames) < LEAST_FRAMES
    low, high = np.percentile(local, [2, 98])
    flat = (  # levels that differ by more than the noise, and a variance that does not follow them
        not short and high - low > 2 * math.sqrt(max(float(k2.mean()), 0.0)) and not slope > 2 * slope_error
    )
    if e_per_adu is not None:
        theta = Estimate(gain / e_per_adu, "given")
    elif not short and not flat and slope > 0 and slope_error < SLOPE_PRECISION * slope:
        theta = Estimate(
            slope / a2, "estimated", slope_error / a2, "the mean-variance line of background pixels"
        )
    elif not short and not flat and ratio > 0 and ratio_error < GAIN_PRECISION * ratio:
        theta = Estimate(
            ratio,
            "estimated",
            ratio_error,
            "k4 / k3 of background pixels (their levels are too even for a line)",
        )
    else:
        if flat:
            why = (
                f"the background's variance does not grow with its level (slope {slope:.3g} +- "
                f"{slope_error:.2g} over levels {low:.0f} to {high:.0f} ADU): not photon counts"
            )
        elif short:
            why = f"only {len(frames)} frames (at least {LEAST_FRAMES} are needed)"
        else:
            why = "the background pixels' statistics are too noisy"
        warnings.append(
            f"e-per-adu: not measured ({why}); the frames are described in ADU as they are, additive "
            f"noise on their background, with a nominal {gain:g} electron per ADU: give --e-per-adu "
            "if they are a camera's counts"
        )
        theta = Estimate(1.0, "default", note=why)
    t = theta.value
    if baseline is not None:
        base = Estimate(float(baseline), "given")
    elif theta.how == "default":  # additive noise: the background's lowest level is its floor
        base = Estimate(float(low), "default", note="the background's lowest level (2nd percentile)")
    else:
        value, error = _grouped((k1, k3), lambda x, y: float(np.mean(x - y / (a3 * t * t))))
        base = Estimate(value, "estimated", error, "k1 - k3 / (a3 theta^2) of background pixels")
    read_var, sampling = _grouped((k1, k2), lambda x, y: float(np.mean(y - a2 * t * (x - base.value))))
    spread = math.hypot(sampling, a2 * t * (base.spread or 0.0))  # its pixels', and the baseline's
    return levels, (slope, intercept), theta, base, Estimate(read_var, "estimated", spread)


def _line_slope(level: np.ndarray, k2: np.ndarray) -> float:
    """The slope of the pixels' variance over their local level (`local_level`): the level is
    the mean of many pixels around each, so it carries hardly any of the pixel's own noise, which
    would otherwise flatten the line (and move with its variance through k3)."""
    spread = np.var(level, ddof=1)
    return float(np.cov(level, k2)[0, 1] / spread) if spread > 0 else math.nan


def local_level(k1: np.ndarray, usable: np.ndarray, radius: int = LEVEL_RADIUS) -> np.ndarray:
    """Each pixel's expected level (H, W): the mean of the usable pixels' means k1 in the square
    of side 2 * radius + 1 around it, as an integral image sums it."""

    def box_sums(values: np.ndarray) -> np.ndarray:
        padded = np.pad(values, ((radius + 1, radius), (radius + 1, radius)))
        total = padded.cumsum(0).cumsum(1)
        side = 2 * radius + 1
        return total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]

    weight = usable.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return box_sums(np.where(usable, k1, 0.0)) / box_sums(weight)
