"""Movies made the way other tools make them, not by pixelreg's renderer: a blinking SMLM movie
on an EMCCD (as DECODE and the SMLM challenge simulate) and a star field on an sCMOS."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ForeignMovie:
    """A rendered movie with its ground truth."""

    frames: np.ndarray  # uint16 (T, H, W) raw ADU
    points: np.ndarray  # float64 (T, M, 2) true (x, y), NaN padded
    photons: np.ndarray  # float64 (T, M) total photons of each spot, NaN padded
    truth: dict[str, float]
    background: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (H, W) bg photons/px


def _profiles(c: np.ndarray, sigma: float, half: int, sub: int) -> tuple[np.ndarray, np.ndarray]:
    """1-D pixel-averaged Gaussian profiles from `sub` point samples per pixel; returns (first pixel, prof)."""
    first = np.rint(c).astype(np.int64) - half
    pix = first[:, None] + np.arange(2 * half + 1)  # (K, W) pixel indices
    s = pix[:, :, None] - 0.5 + (np.arange(sub) + 0.5) / sub  # sub-pixel sample centres
    g = np.exp(-((s - c[:, None, None]) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return first, g.mean(axis=2)


def _render_spots(
    points: np.ndarray, photons: np.ndarray, h: int, w: int, sigma: float, sub: int
) -> np.ndarray:
    """Expected photons/px (T, H, W) of Gaussian spots, each pixel averaged over sub x sub point samples.

    The 2-D average of a separable Gaussian over a sub x sub grid equals the product of the 1-D averages,
    so this is exactly the supersampled (or fine-grid-binned) PSF. Window is +-ceil(5 sigma) pixels.
    """
    t_n = points.shape[0]
    half = int(np.ceil(5 * sigma))
    hp, wp = h + 2 * half, w + 2 * half
    ok = np.isfinite(photons)
    t_idx = np.nonzero(ok)[0]
    xy, ph = points[ok], photons[ok]
    fx, px = _profiles(xy[:, 0], sigma, half, sub)
    fy, py = _profiles(xy[:, 1], sigma, half, sub)
    win = py[:, :, None] * px[:, None, :] * ph[:, None, None]  # (K, W, W)
    ar = np.arange(2 * half + 1)
    rows = fy[:, None] + ar + half  # padded-canvas rows
    cols = fx[:, None] + ar + half
    flat = (t_idx[:, None, None] * hp + rows[:, :, None]) * wp + cols[:, None, :]
    canvas = np.bincount(flat.ravel(), weights=win.ravel(), minlength=t_n * hp * wp)
    return canvas.reshape(t_n, hp, wp)[:, half : half + h, half : half + w]


def _camera(
    rng: np.random.Generator,
    expected: np.ndarray,
    qe: float,
    em_gain: float,
    read_noise: float,
    e_per_adu: float,
    baseline: float,
) -> np.ndarray:
    """Poisson shot noise, optional EM (Gamma) gain, Gaussian read noise, ADU quantisation to uint16."""
    electrons = rng.poisson(expected * qe).astype(np.float64)
    if em_gain > 1:
        pos = electrons > 0
        electrons[pos] = rng.gamma(shape=electrons[pos], scale=em_gain)
    electrons += rng.normal(0.0, read_noise, size=electrons.shape)
    return np.clip(np.rint(baseline + electrons / e_per_adu), 0, 65535).astype(np.uint16)


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Stack ragged per-frame arrays (n_t, ...) into (T, width, ...) with NaN padding."""
    out = np.full((len(rows), width, *rows[0].shape[1:]), np.nan)
    for t, r in enumerate(rows):
        out[t, : len(r)] = r
    return out


def render_smlm(
    frames: int = 100,
    size: int = 256,
    seed: int = 0,
    density: float = 60 / 256**2,
    duty: float = 0.1,
    on_frames: float = 3.0,
    sigma: float = 1.3,
    photons_median: float = 1500.0,
    photons_log_sd: float = 0.5,
    em_gain: float = 100.0,
    e_per_adu: float = 12.0,
    baseline: float = 400.0,
    read_noise: float = 30.0,
) -> ForeignMovie:
    """SMLM-challenge-like blinking movie on an EMCCD; `density` is mean on-emitters per px^2."""
    rng = np.random.default_rng(seed)
    n_em = max(1, round(density * size * size / duty))
    lo, hi = 1.5, size - 2.5  # >= 2 px from the frame edges at -0.5 and size - 0.5
    xy = rng.uniform(lo, hi, size=(n_em, 2))
    p_off = 1.0 / on_frames  # on -> off; mean on-time = on_frames
    p_on = duty * p_off / (1.0 - duty)  # off -> on, so the stationary on-fraction is `duty`
    on = rng.random(n_em) < duty
    pts, phs = [], []
    for _ in range(frames):
        k = int(on.sum())
        ph = np.clip(photons_median * np.exp(photons_log_sd * rng.standard_normal(k)), 500.0, 5000.0)
        pts.append(xy[on])
        phs.append(ph)
        u = rng.random(n_em)
        on = np.where(on, u >= p_off, u < p_on)
    m = max(1, max(len(p) for p in pts))
    points, photons = _pad(pts, m), _pad(phs, m)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0
    bg = 20.0 + 40.0 * np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (0.45 * size) ** 2))
    expected = _render_spots(points, photons, size, size, sigma, 8) + bg
    adu = _camera(rng, expected, 1.0, em_gain, read_noise, e_per_adu, baseline)
    truth = {
        "sigma": sigma,
        "photons_min": 500.0,
        "photons_max": 5000.0,
        "background_min": float(bg.min()),
        "background_max": float(bg.max()),
        "baseline": baseline,
        "e_per_adu": e_per_adu,
        "em_gain": em_gain,
        "read_noise": read_noise,
        "qe": 1.0,
        "spots_per_frame": float(np.mean([len(p) for p in pts])),
    }
    return ForeignMovie(adu, points, photons, truth, bg)


def render_stars(
    frames: int = 60,
    size: int = 256,
    seed: int = 0,
    n_stars: int = 80,
    sigma: float = 1.0,
    jitter: float = 0.3,
    flux_min: float = 300.0,
    flux_max: float = 4000.0,
    scint: float = 0.1,
    e_per_adu: float = 2.0,
    baseline: float = 1000.0,
    read_noise: float = 3.0,
    background: tuple[float, float] = (8.0, 25.0),
) -> ForeignMovie:
    """Star field with per-frame tip-tilt jitter and scintillation on a CCD/sCMOS (no EM gain),
    on a `background` (photons/px) that rises from the first column to the last."""
    rng = np.random.default_rng(seed)
    max_shift = 5 * jitter
    lo, hi = 1.5 + max_shift, size - 2.5 - max_shift
    base = rng.uniform(lo, hi, size=(n_stars, 2))
    flux = np.exp(rng.uniform(np.log(flux_min), np.log(flux_max), size=n_stars))
    shift = np.clip(rng.normal(0.0, jitter, size=(frames, 1, 2)), -max_shift, max_shift)
    points = base[None] + shift  # (T, M, 2)
    photons = flux[None] * rng.uniform(1 - scint, 1 + scint, size=(frames, n_stars))
    xx = np.arange(size, dtype=np.float64)
    low, high = background
    bg = np.broadcast_to(low + (high - low) * xx / (size - 1), (size, size)).copy()
    expected = _render_spots(points, photons, size, size, sigma, 5) + bg
    adu = _camera(rng, expected, 1.0, 0.0, read_noise, e_per_adu, baseline)
    truth = {
        "sigma": sigma,
        "photons_min": float(photons.min()),
        "photons_max": float(photons.max()),
        "background_min": float(bg.min()),
        "background_max": float(bg.max()),
        "baseline": baseline,
        "e_per_adu": e_per_adu,
        "em_gain": 0.0,
        "read_noise": read_noise,
        "qe": 1.0,
        "spots_per_frame": float(n_stars),
    }
    return ForeignMovie(adu, points, photons, truth, bg)


def render_grey_spots(
    frames: int = 70,
    size: int = 128,
    seed: int = 0,
    spots: int = 30,
    sigma: float = 1.06,
    peaks: tuple[float, float] = (750.0, 3000.0),
    pedestal: float = 200.0,
    noise: float = 300.0,
    bits: int = 12,
    gradient: float = 0.0,
) -> ForeignMovie:
    """Spots drawn as trackpy's own test data are: point-sampled Gaussians of `sigma` with peak
    heights uniform in `peaks`, on a `pedestal` with uniform noise 0..`noise`, in `bits`-bit
    grey levels; no photon statistics at all. `gradient` adds a pedestal rising by that much
    from the first column to the last. `photons` holds each spot's peak height."""
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    movie = np.empty((frames, size, size), np.uint16)
    points = np.full((frames, spots, 2), np.nan)
    heights = np.full((frames, spots), np.nan)
    for t in range(frames):
        xy = rng.uniform(3.0, size - 4.0, size=(spots, 2))
        peak = rng.uniform(*peaks, size=spots)
        image = pedestal + gradient * xx / (size - 1) + rng.uniform(0.0, noise, size=(size, size))
        for (x, y), height in zip(xy, peak, strict=True):
            near = (np.abs(xx - x) <= 5 * sigma) & (np.abs(yy - y) <= 5 * sigma)
            image[near] += height * np.exp(-((xx[near] - x) ** 2 + (yy[near] - y) ** 2) / (2 * sigma**2))
        movie[t] = np.clip(np.rint(image), 0, top)
        points[t], heights[t] = xy, peak
    truth = {
        "sigma": sigma,
        "peak_min": peaks[0],
        "peak_max": peaks[1],
        "pedestal": pedestal,
        "noise": noise,
        "spots_per_frame": float(spots),
    }
    return ForeignMovie(movie, points, heights, truth)
