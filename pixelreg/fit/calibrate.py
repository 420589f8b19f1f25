"""`pixelreg calibrate`: a movie's imaging parameters from its own frames, so that a model can
be trained for it without ground truth (DECODE's workflow: estimate, simulate, train).

The camera. A pixel reads ADU = baseline + theta * (photoelectrons, through the EM register if
there is one) + Gaussian read noise, theta ADU per photoelectron. Over the frames in which no
spot touches it, a background pixel's values have the cumulants

    k1 = baseline + theta * lam,   k2 = a2 theta^2 lam + s^2,   k3 = a3 theta^3 lam,   k4 = a4 theta^4 lam

for its background of lam photoelectrons, with (a2, a3, a4) = (1, 1, 1) for Poisson light
(sCMOS, CCD) and (2, 6, 24) behind an EM register (a Poisson number of exponential bursts).
Read noise is Gaussian: it adds to k2 alone. So the slope of k2 over k1 across pixels of
different backgrounds is a2 * theta (the mean-variance line), or where the background is even,
theta = (a3 / a4) * k4 / k3; then lam = k3 / (a3 theta^3) gives the baseline and the read
noise. The EM gain itself cannot be told from read noise this way: it is the user's to give.

The spots. Bright isolated spots are fitted (Poisson maximum likelihood, the PSF's sigma free)
for the PSF; every detected spot, sigma fixed, for the range of photons; the background is the
pixels' k1 less the baseline; the spots per frame are counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelreg.errors import PixelregError
from pixelreg.fit.bounds import crlb
from pixelreg.fit.calibrate_camera import EM_MOMENTS, POISSON_MOMENTS, Estimate, camera_estimates
from pixelreg.fit.defaults import PSF_MODELS
from pixelreg.fit.photometry import poisson_fit, poisson_fit_3d
from pixelreg.fit.psf import window_pixels
from pixelreg.fit.psf_measure import EXTRA, MOVIE_RADIUS, BeadPSF, MoviePSF, psf_from_beads, psf_from_spots
from pixelreg.fit.spots import find_spots
from pixelreg.fit.twin import Twin, central, compare, render_twin
from pixelreg.simulate.camera import ADU_MAX, Camera
from pixelreg.simulate.psf import SampledPSF
from pixelreg.simulate.spec import DataSpec

FIT_RADIUS = 7  # px: spots are fitted in windows of 2 * FIT_RADIUS + 1
ISOLATION = 12.0  # px: a spot fitted for the PSF has no other spot this near
PSF_SPOTS = 1500  # the brightest isolated spots fitted for the PSF, at most
PHOTON_SPOTS = 20_000  # spots fitted for their photons, at most
PHOTON_MARGIN = 1.25  # the training range reaches this factor beyond the 1st and 99th percentiles
TRAIN_SIZE = 64  # the training crops' side ...
TRAIN_N = 10_000  # ... and number
MIN_PSF_SPOTS = 20  # isolated spots averaged into a PSF, at least
MeasuredPSF = BeadPSF | MoviePSF


@dataclass
class Calibration:
    """What `calibrate` found: the training spec, each estimate, warnings, and what the figure draws."""

    spec: DataSpec
    estimates: dict[str, Estimate]
    warnings: list[str]
    frames: int
    size: tuple[int, int]
    levels: np.ndarray = field(repr=False)  # (bins, 2): mean ADU and variance of background pixels
    line: tuple[float, float] = (0.0, 0.0)  # variance = slope * mean + intercept
    profile: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2)))  # r px, mean light
    photons: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # every fitted spot's
    twin: Twin | None = field(repr=False, default=None)  # the simulated twin, compared with the movie
    measured: MeasuredPSF | None = field(repr=False, default=None)  # a PSF measured from beads or spots
    psf: SampledPSF | None = field(repr=False, default=None)  # ... and the one the spec trains on
    z_range: tuple[float, float] = (0.0, 0.0)  # nm: the depths training draws through `psf`

    def spec_with_psf(self, path: Path) -> DataSpec:
        """The spec, its PSF saved at `path` where one was measured: what a library user trains on."""
        if self.psf is None:
            return self.spec
        self.psf.save(path)
        return self.spec.with_(**self._psf_options(str(path)))

    def _psf_options(self, name: str) -> dict[str, Any]:
        """The spec's fields that name the PSF file `name` and the depths drawn through it."""
        low, high = self.z_range
        return {"psf": name, "z": low, "z_max": high if high > low else None}

    def require_twin(self) -> None:
        """Refuse a spec whose simulated twin disagrees with the movie, naming each statistic."""
        if self.twin is not None and not self.twin.agrees:
            raise PixelregError(
                "the spec cannot have made this movie: its simulated twin differs in "
                + "; ".join(self.twin.disagreements())
                + ". Are these a camera's raw frames of spots? (the table above compares them)"
            )

    def summary(self, psf_name: str = "psf.npz") -> dict[str, Any]:
        """The estimates as plain data: the spec JSON `calibrate` writes (`train --spec` reads its
        `spec`, whose `psf` names the PSF file `psf_name` beside it, where one was measured) and
        prints with `--json`."""
        spec = self.spec.to_dict()
        psf: dict[str, Any] | None = None
        if self.psf is not None:
            spec.update(self._psf_options(psf_name))
            psf = {
                "file": psf_name,
                "source": self.psf.source,
                "radius_px": self.psf.radius,
                "planes": self.psf.planes,
                "z_range_nm": list(self.psf.z_range),
                "gaussian_sigma_px": round(self.psf.gaussian_sigma(0.0 if self.psf.planes > 1 else None), 4),
            }
        return {
            "frames": self.frames,
            "size": list(self.size),
            "estimates": {
                name: {"value": _finite(e.value), "how": e.how, "spread": _finite(e.spread), "note": e.note}
                for name, e in self.estimates.items()
            },
            "warnings": self.warnings,
            "twin": self.twin.summary() if self.twin is not None else None,
            "psf": psf,
            "spec": spec,
        }


def training_spec(spots_per_frame: float, frame_pixels: int, **conditions: Any) -> DataSpec:
    """TRAIN_N crops of TRAIN_SIZE of a movie's `conditions` (the camera's, the spots'), each
    with 0 up to 2.4 times the movie's density of spots: what `calibrate` writes to train on."""
    most = max(1, round(2 * spots_per_frame * TRAIN_SIZE**2 / frame_pixels * 1.2))
    return DataSpec(
        n=TRAIN_N,
        height=TRAIN_SIZE,
        width=TRAIN_SIZE,
        points=0,
        points_max=most,
        holdout="none",
        val_fraction=0.1,
        test_fraction=0.0,
        seed=0,
        subpixel=True,
        **conditions,
    )


def _finite(value: float | None) -> float | None:
    """A number for JSON: None where there is none, or it is not finite."""
    return None if value is None or not math.isfinite(value) else float(value)


def calibrate(
    frames: np.ndarray,
    baseline: float | None = None,
    e_per_adu: float | None = None,
    em_gain: float = 0.0,
    say: Callable[[str], None] = lambda message: None,
    beads: np.ndarray | None = None,
    z_step: float = 0.0,
    psf_model: str = "auto",
) -> Calibration:
    """Estimate the camera, PSF, photons, background and density of raw frames (T, H, W) in ADU;
    `baseline` and `e_per_adu`, where given, are used as they are; `em_gain` is the EM register's
    (0: none). Warnings say which estimate was not possible and which default was used.

    The PSF: from a z-stack of `beads` (planes `z_step` nm apart) where given, the depths to
    train on from the spread of the spots' widths; else `psf_model` "auto" measures it from the
    movie's bright isolated spots and keeps it where the best Gaussian lies beyond their
    average's noise, "measured" keeps it always, "gaussian" never."""
    if psf_model not in PSF_MODELS:
        raise PixelregError(f"the PSF model must be one of {', '.join(PSF_MODELS)}, got {psf_model!r}")
    count, height, width = frames.shape
    if min(height, width) < 2 * FIT_RADIUS + 1:
        raise PixelregError(f"frames of {height}x{width} are too small to calibrate; at least 15x15")
    warnings: list[str] = []
    _check_levels(frames, baseline, warnings)
    saturated = _check_saturation(frames, warnings)
    pixels = torch.from_numpy(frames.astype(np.float32))[:, None]
    say(f"Finding spots in {count} frames of {height}x{width}")
    peaks, mask = _require_spots(pixels)  # (S, 3) frame, row, column; (T, H, W) bool near a spot
    moments = EM_MOMENTS if em_gain > 1.0 else POISSON_MOMENTS
    levels, line, theta, baseline_est, read_var = camera_estimates(
        frames, mask, moments, baseline, e_per_adu, em_gain, warnings
    )
    gain = em_gain if em_gain > 1.0 else 1.0
    estimates, camera = _camera_parameters(theta, baseline_est, read_var, e_per_adu, em_gain)
    e_adu = estimates["e_per_adu"].value
    photons = (frames.astype(np.float32) - camera.baseline) * (e_adu / gain)  # photoelectrons
    say(f"Fitting {min(len(peaks), PSF_SPOTS)} bright isolated spots for the PSF")
    sigma, profile, isolated, fitted = _psf(photons, peaks, frames, saturated, camera, warnings)
    estimates["blur"] = sigma
    if beads is not None:
        say(f"Measuring the PSF from {len(beads)} planes of beads")
    measured, psf, z_range = _measured_psf(
        photons, isolated, fitted, camera, beads, z_step, psf_model, estimates
    )
    say("Fitting every spot's photons")
    spot_photons = _spot_photons(photons, peaks, frames, saturated, camera, sigma.value)
    estimates.update(_photon_estimates(spot_photons, warnings))
    estimates.update(_background_estimates(levels, camera.baseline, e_adu / gain))
    per_frame = len(peaks) / count
    counts = np.bincount(peaks[:, 0].astype(np.int64), minlength=count)
    estimates["spots_per_frame"] = Estimate(
        per_frame,
        "estimated",
        float(counts.std() / math.sqrt(count)),
        note="spots found, not counting overlaps",
    )
    spec = _calibrated_spec(estimates, camera, height * width)
    say("Rendering the movie's simulated twin from what was measured")
    compared = central(frames)
    area = compared.shape[1] * compared.shape[2] / (height * width)
    twin = compare(compared, render_twin(spec, compared, per_frame * area, spot_photons))
    return Calibration(
        spec,
        estimates,
        warnings,
        count,
        (height, width),
        levels,
        line,
        profile,
        spot_photons,
        twin,
        measured,
        psf,
        z_range,
    )


def _check_levels(frames: np.ndarray, baseline: float | None, warnings: list[str]) -> None:
    """Refuse frames of one value (nothing to measure); warn of a given baseline above most of the
    pixels, which would read as negative light."""
    low, high = int(frames.min()), int(frames.max())
    if low == high:
        raise PixelregError(
            f"every pixel of the {len(frames)} frames reads {low} ADU: there is no light or noise to "
            "measure; are these a camera's raw frames?"
        )
    typical = float(np.median(frames[:, ::4, ::4]))
    if baseline is not None and baseline > typical:
        warnings.append(
            f"the baseline given, {baseline:g} ADU, lies above most of the pixels (median {typical:g} ADU), "
            "which would read as less than no light; is it this camera's?"
        )


def _check_saturation(frames: np.ndarray, warnings: list[str]) -> int | None:
    """The ADU at which the frames saturate (None: they do not), with a warning of the share of
    pixels that read it; raise where so many do that nothing can be measured."""
    saturated = _saturation(frames)
    if saturated is not None:
        share = float((frames >= saturated).mean())
        if share > 0.05:
            raise PixelregError(
                f"{share:.0%} of the pixels are saturated (at {saturated} ADU): nothing can be measured; "
                "record with less light or a shorter exposure"
            )
        warnings.append(
            f"{share:.2%} of the pixels read {saturated} ADU (saturated): spots touching them are left out"
        )
    return saturated


def _require_spots(pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The spots of the frames and the pixels near them, as find_spots gives them; raise where
    there are none, since every estimate but the camera's needs spots."""
    peaks, mask = find_spots(pixels)
    if len(peaks) == 0:
        raise PixelregError(
            "no spots found in the frames (nothing stands 5 noise sigmas above the background); "
            "are these the right files?"
        )
    return peaks, mask


def _camera_parameters(
    theta: Estimate, baseline: Estimate, read_var: Estimate, e_per_adu: float | None, em_gain: float
) -> tuple[dict[str, Estimate], Camera]:
    """The camera's estimates (baseline, e_per_adu, em_gain, read_noise, in that order) from
    theta (ADU per photoelectron), the baseline and the read noise's variance (ADU^2); and the
    Camera they make, through which the spots are fitted."""
    gain = em_gain if em_gain > 1.0 else 1.0
    estimates: dict[str, Estimate] = {}
    estimates["baseline"] = baseline
    estimates["e_per_adu"] = (
        Estimate(float(e_per_adu), "given")
        if e_per_adu is not None
        else Estimate(
            gain / theta.value,
            theta.how,
            None if theta.spread is None else gain / theta.value * theta.spread / theta.value,
            theta.note,
        )
    )
    estimates["em_gain"] = Estimate(
        float(em_gain),
        "given" if em_gain else "default",
        note="" if em_gain else "no EM register (give --em-gain for an EMCCD)",
    )
    e_adu = estimates["e_per_adu"].value
    noise = math.sqrt(max(read_var.value, 0.0))  # ADU rms
    spread = None if read_var.spread is None else e_adu * read_var.spread / (2 * max(noise, 0.5))
    estimates["read_noise"] = Estimate(noise * e_adu, read_var.how, spread, note="electrons rms")
    try:
        camera = Camera(
            qe=1.0,
            em_gain=float(em_gain),
            read_noise=estimates["read_noise"].value,
            e_per_adu=e_adu,
            baseline=float(np.clip(estimates["baseline"].value, 0.0, ADU_MAX - 1)),
        )
    except PixelregError as exc:  # what the frames give is beyond any camera: say so, not which option
        given = f" with em_gain {em_gain:g}" if em_gain else ""
        raise PixelregError(
            f"the camera measured from these frames{given} is beyond any real one ({exc}); are they "
            "a camera's raw frames" + (", and is em_gain right?" if em_gain else "?"),
            ("em_gain",),
        ) from None
    return estimates, camera


def _photon_estimates(spot_photons: np.ndarray, warnings: list[str]) -> dict[str, Estimate]:
    """The estimates "photons" and "photons_max": the range of photons to train on (see
    _photon_range), each noting the percentile of the fitted spots it comes from, with the
    spread of that percentile over halves of the spots."""
    low, high = _photon_range(spot_photons, warnings)
    if len(spot_photons) < 20:
        note = f"only {len(spot_photons)} spots fitted"
        return {
            "photons": Estimate(low, "default", note=note),
            "photons_max": Estimate(high, "default", note=note),
        }
    halves = np.array_split(np.random.default_rng(0).permutation(spot_photons), 2)
    spread = [float(abs(np.subtract(*(np.percentile(h, q) for h in halves)))) / 2 for q in (1, 99)]
    return {
        "photons": Estimate(
            low,
            "estimated",
            spread[0] / PHOTON_MARGIN,
            note=f"1st percentile {np.percentile(spot_photons, 1):.0f} / {PHOTON_MARGIN}",
        ),
        "photons_max": Estimate(
            high,
            "estimated",
            spread[1] * PHOTON_MARGIN,
            note=f"99th percentile {np.percentile(spot_photons, 99):.0f} x {PHOTON_MARGIN}",
        ),
    }


def _background_estimates(levels: np.ndarray, baseline: float, scale: float) -> dict[str, Estimate]:
    """The estimates "background_photons" and "background_photons_max": the 2nd and 98th
    percentiles over the field of the background pixels' levels (bins, 2), less the `baseline`
    (ADU) and times `scale` (photons per ADU), never below 0; each spread is half the difference
    of the two halves' percentiles."""
    background = (levels[:, 0] - baseline) * scale
    halves = (background[::2], background[1::2]) if len(background) > 3 else (background, background)
    estimates = {}
    for name, q, where in (
        ("background_photons", 2, "2nd percentile over the field"),
        ("background_photons_max", 98, "98th percentile over the field"),
    ):
        spread = abs(float(np.percentile(halves[0], q) - np.percentile(halves[1], q))) / 2
        estimates[name] = Estimate(float(max(0.0, np.percentile(background, q))), "estimated", spread, where)
    return estimates


def _calibrated_spec(estimates: dict[str, Estimate], camera: Camera, frame_pixels: int) -> DataSpec:
    """The training spec of a movie of frames of `frame_pixels` from its estimates and camera; the
    background is left even where its range is within 5% (and 0.01 photons) of its lowest."""
    bg_low, bg_high = estimates["background_photons"].value, estimates["background_photons_max"].value
    return training_spec(
        estimates["spots_per_frame"].value,
        frame_pixels,
        blur=round(estimates["blur"].value, 3),
        photons=round(estimates["photons"].value, 1),
        photons_max=round(estimates["photons_max"].value, 1),
        background_photons=round(bg_low, 2),
        background_photons_max=round(bg_high, 2) if bg_high > bg_low * 1.05 + 0.01 else None,
        qe=1.0,
        em_gain=camera.em_gain,
        read_noise=round(camera.read_noise, 3),
        e_per_adu=round(estimates["e_per_adu"].value, 5),
        baseline=round(camera.baseline, 2),
    )


def _saturation(frames: np.ndarray) -> int | None:
    """The ADU at which the camera saturates, if some pixels reach it: 65535, or a lower top
    value that many pixels share (a 12- or 14-bit camera's clipping)."""
    top = int(frames.max())
    if top >= ADU_MAX or int((frames == top).sum()) >= 20:
        return top
    return None


def _windows(images: np.ndarray, peaks: np.ndarray, radius: int) -> np.ndarray:
    """(S, 2r+1, 2r+1) windows of `images` (T, H, W) around each peak (frame, row, column)."""
    f, r, c = (peaks[:, i].astype(int) for i in range(3))
    steps = np.arange(-radius, radius + 1)
    return window_pixels(images, (c[:, None] + steps)[:, None, :], (r[:, None] + steps)[:, :, None], frames=f)


def _fittable(peaks: np.ndarray, frames: np.ndarray, saturated: int | None) -> np.ndarray:
    """Which peaks have a whole fitting window inside the frame, with no saturated pixel."""
    _, height, width = frames.shape
    r, c = peaks[:, 1], peaks[:, 2]
    inside = (r >= FIT_RADIUS) & (r < height - FIT_RADIUS) & (c >= FIT_RADIUS) & (c < width - FIT_RADIUS)
    if saturated is None or not inside.any():
        return inside
    clipped = np.zeros(len(peaks), dtype=bool)
    clipped[inside] = (_windows(frames, peaks[inside], FIT_RADIUS) >= saturated).any((-2, -1))
    return inside & ~clipped


def _fit_windows(windows: np.ndarray, camera: Camera, sigma: float, free_sigma: bool) -> np.ndarray:
    """(S, 5) Poisson ML fits of one spot in each window, started at the window's centre."""
    border = np.concatenate([windows[:, 0], windows[:, -1], windows[:, 1:-1, 0], windows[:, 1:-1, -1]], 1)
    background = np.median(border, 1)
    light = np.clip((windows - background[:, None, None]).sum((-2, -1)), 10.0, None)
    centre = np.full((len(windows), 1, 2), float(FIT_RADIUS))
    fitted = poisson_fit(
        windows.astype(np.float64),
        centre,
        light[:, None],
        np.maximum(background, 0.1)[:, None],
        np.full((len(windows), 1), sigma),
        camera,
        (True, True, True, True, free_sigma),
    )[:, 0]
    moved = np.abs(fitted[:, :2] - FIT_RADIUS).max(1)
    good = np.isfinite(fitted).all(1) & (moved < 1.5) & (fitted[:, 2] > 1.0)
    return np.where(good[:, None], fitted, np.nan)


def _isolated(peaks: np.ndarray) -> np.ndarray:
    """Which peaks have no other in their frame within ISOLATION pixels."""
    alone = np.ones(len(peaks), dtype=bool)
    for frame in np.unique(peaks[:, 0]):
        index = np.nonzero(peaks[:, 0] == frame)[0]
        where = peaks[index, 1:3]
        gap = np.linalg.norm(where[:, None] - where[None], axis=-1)
        np.fill_diagonal(gap, np.inf)
        alone[index] = gap.min(1) > ISOLATION
    return alone


def _psf(
    photons: np.ndarray,
    peaks: np.ndarray,
    frames: np.ndarray,
    saturated: int | None,
    camera: Camera,
    warnings: list[str],
) -> tuple[Estimate, np.ndarray, np.ndarray, np.ndarray]:
    """The PSF's sigma from the brightest isolated spots, their mean radial profile (r, light per
    pixel as a share of the spot's photons), and the spots fitted well (S, 4 peaks) with their
    fits (S, 5, in their windows' coordinates)."""
    chosen = np.nonzero(_fittable(peaks, frames, saturated) & _isolated(peaks))[0]
    chosen = chosen[np.argsort(-peaks[chosen, 3])][: max(10, min(PSF_SPOTS, len(chosen) // 2))]
    fitted = _fit_windows(_windows(photons, peaks[chosen], FIT_RADIUS), camera, 1.3, True)
    good = np.isfinite(fitted).all(1) & (fitted[:, 4] > 0.31) & (fitted[:, 4] < 4.9)
    if good.sum() < 10:
        warnings.append(
            f"blur: only {int(good.sum())} isolated spots could be fitted; the default sigma 1.0 px is used"
        )
        return (
            Estimate(1.0, "default", note="too few isolated spots"),
            np.zeros((0, 2)),
            np.zeros((0, 4)),
            np.zeros((0, 5)),
        )
    sigmas = fitted[good, 4]
    sigma = float(np.median(sigmas))
    spread = float(1.4826 * np.median(np.abs(sigmas - sigma)))
    windows = _windows(photons, peaks[chosen[good]], FIT_RADIUS)
    steps = np.arange(2 * FIT_RADIUS + 1)  # the windows' own pixel coordinates, as fitted
    dx = steps[None, None, :] - fitted[good, 0, None, None]
    dy = steps[None, :, None] - fitted[good, 1, None, None]
    radius = np.hypot(dx, dy)
    share = (windows - fitted[good, 3, None, None]) / fitted[good, 2, None, None]
    edges = np.arange(0, FIT_RADIUS + 0.25, 0.25)
    which = np.digitize(radius.ravel(), edges) - 1
    profile = np.array(
        [
            [edges[i] + 0.125, share.ravel()[which == i].mean()]
            for i in range(len(edges) - 1)
            if (which == i).any()
        ]
    )
    note = f"median of {int(good.sum())} isolated spots' fits"
    return Estimate(sigma, "estimated", spread, note), profile, peaks[chosen[good]], fitted[good]


def _measured_psf(
    photons: np.ndarray,
    isolated: np.ndarray,
    fitted: np.ndarray,
    camera: Camera,
    beads: np.ndarray | None,
    z_step: float,
    psf_model: str,
    estimates: dict[str, Estimate],
) -> tuple[MeasuredPSF | None, SampledPSF | None, tuple[float, float]]:
    """The PSF measured (from beads, or from the isolated spots), the one to train on (None: the
    Gaussian of the spots' sigma), and the depths (nm) to draw; the spread of the spots' widths, beyond
    their noise, joins the estimates."""
    spread = _width_spread(fitted, camera)
    if spread is not None:
        estimates["width_spread"] = Estimate(
            spread[0],
            "estimated",
            spread[1],
            note="sd of the isolated spots' sigmas beyond their fits' noise, px",
        )
    if beads is not None:
        from_beads = psf_from_beads(beads, z_step)
        if from_beads.psf.tells_depth:  # astigmatic: the depths the spots' fits show
            return (
                from_beads,
                from_beads.psf,
                _fitted_depths(photons, isolated, fitted, camera, from_beads.psf),
            )
        return from_beads, from_beads.psf, _depth_range(from_beads.psf, spread[0] if spread else 0.0)
    if psf_model == "gaussian" or len(fitted) < MIN_PSF_SPOTS:
        return None, None, (0.0, 0.0)
    reach = MOVIE_RADIUS + EXTRA
    height, width = photons.shape[1:]
    rows, cols = isolated[:, 1], isolated[:, 2]
    inside = (rows >= reach) & (rows < height - reach) & (cols >= reach) & (cols < width - reach)
    if inside.sum() < MIN_PSF_SPOTS:
        return None, None, (0.0, 0.0)
    windows = _windows(photons, isolated[inside], reach)
    moved = fitted[inside].copy()
    moved[:, :2] += reach - FIT_RADIUS  # the fits' coordinates in the larger windows
    from_movie = psf_from_spots(windows, moved)
    if psf_model == "auto" and from_movie.gaussian_suffices:
        return from_movie, None, (0.0, 0.0)
    return from_movie, from_movie.psf, (0.0, 0.0)


def _width_spread(fitted: np.ndarray, camera: Camera) -> tuple[float, float] | None:
    """The standard deviation of the isolated spots' sigmas that their fits' noise (the
    Cramér-Rao bound of each) does not explain: how far the emitters spread through focus; and
    half the difference of the two halves' values."""
    if len(fitted) < MIN_PSF_SPOTS:
        return None
    side = 2 * FIT_RADIUS + 1
    bound = crlb(
        fitted[:, None, :2],
        fitted[:, None, 2],
        fitted[:, None, 3],
        fitted[:, None, 4],
        camera,
        (side, side),
        (True,) * 5,
    )[:, 0, 4]

    def beyond_noise(rows: slice) -> float:
        return math.sqrt(max(0.0, float(np.var(fitted[rows, 4])) - float(np.mean(bound[rows] ** 2))))

    return beyond_noise(slice(None)), abs(
        beyond_noise(slice(0, None, 2)) - beyond_noise(slice(1, None, 2))
    ) / 2


DEPTH_QUANTILES = (0.01, 0.99)  # the spots' fitted depths between these make the range to train on
DEPTH_MARGIN = 0.1  # that range's share added either side (50 nm at least): a defocused spot
# is dimmer, so fewer of the deepest are found


def _fitted_depths(
    photons: np.ndarray, isolated: np.ndarray, fitted: np.ndarray, camera: Camera, psf: SampledPSF
) -> tuple[float, float]:
    """The depths (nm) to train on under an astigmatic `psf`: those of the isolated spots' 3D
    Poisson fits between DEPTH_QUANTILES, DEPTH_MARGIN wider either side, within the PSF's;
    the PSF's whole range where too few spots were fitted."""
    if len(fitted) < MIN_PSF_SPOTS:
        return psf.z_range
    reach = psf.radius + 2
    windows = _windows(photons, isolated, reach)  # (S, W, W), each spot's peak in the middle
    where = fitted[:, None, :2] + (reach - FIT_RADIUS)  # the fits' positions in these windows
    fits = poisson_fit_3d(windows, where, fitted[:, None, 2], fitted[:, None, 3], psf, camera)
    depths = fits[:, 0, 4]
    low, high = np.quantile(depths, DEPTH_QUANTILES)
    margin = max(50.0, DEPTH_MARGIN * (high - low))
    first, last = psf.z_range
    return float(max(first, low - margin)), float(min(last, high + margin))


def _depth_range(psf: SampledPSF, spread: float) -> tuple[float, float]:
    """The depths (nm) about the PSF's sharpest plane over which its width grows by the spread
    of the spots' widths between their 5th and 95th percentiles; at least a plane either side."""
    low, high = psf.z_range
    depths = np.linspace(low, high, 4 * (psf.planes - 1) + 1)
    widths = np.array([psf.gaussian_sigma(float(z)) for z in depths])
    sharpest = int(np.argmin(widths))
    within = widths <= widths[sharpest] + 2 * 1.645 * spread
    first = last = sharpest
    while first > 0 and within[first - 1]:
        first -= 1
    while last < len(depths) - 1 and within[last + 1]:
        last += 1
    centre = depths[sharpest]
    return (
        float(max(low, min(depths[first], centre - psf.z_step))),
        float(min(high, max(depths[last], centre + psf.z_step))),
    )


def _spot_photons(
    photons: np.ndarray,
    peaks: np.ndarray,
    frames: np.ndarray,
    saturated: int | None,
    camera: Camera,
    sigma: float,
) -> np.ndarray:
    """The photons of every fittable spot (at most PHOTON_SPOTS, chosen at random), sigma fixed."""
    chosen = np.nonzero(_fittable(peaks, frames, saturated))[0]
    if len(chosen) > PHOTON_SPOTS:
        chosen = np.sort(np.random.default_rng(0).choice(chosen, PHOTON_SPOTS, replace=False))
    fitted = _fit_windows(_windows(photons, peaks[chosen], FIT_RADIUS), camera, sigma, False)
    return fitted[np.isfinite(fitted[:, 2]), 2]


def _photon_range(spot_photons: np.ndarray, warnings: list[str]) -> tuple[float, float]:
    """The photons to train on: from the 1st to the 99th percentile of the spots', widened by
    PHOTON_MARGIN on either side."""
    if len(spot_photons) < 20:
        warnings.append(
            f"photons: only {len(spot_photons)} spots could be fitted; the default 100:10000 is used"
        )
        return 100.0, 10_000.0
    low, high = np.percentile(spot_photons, [1, 99])
    return float(max(1.0, low / PHOTON_MARGIN)), float(high * PHOTON_MARGIN)
