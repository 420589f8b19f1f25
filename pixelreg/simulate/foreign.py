"""Movies made the way other tools make them, not by pixelreg's renderer: a blinking SMLM movie
on an EMCCD (as DECODE and the SMLM challenge simulate) and a star field on an sCMOS."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ForeignMovie:
    """A rendered movie with its ground truth."""

    frames: np.ndarray  # uint16 (T, H, W) raw ADU
    points: np.ndarray  # float64 (T, M, 2) true (x, y), NaN padded
    photons: np.ndarray  # float64 (T, M) total photons of each spot, NaN padded
    truth: dict[str, Any]
    background: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (H, W) bg photons/px
    z: np.ndarray | None = None  # float64 (T, M) true depths, nm, where the PSF has depth


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
    half = int(np.ceil(5 * sigma))
    ok = np.isfinite(photons)
    t_idx = np.nonzero(ok)[0]
    xy, ph = points[ok], photons[ok]
    fx, px = _profiles(xy[:, 0], sigma, half, sub)
    fy, py = _profiles(xy[:, 1], sigma, half, sub)
    canvas = np.zeros((points.shape[0], h, w))
    _add_windows(canvas, t_idx, py[:, :, None] * px[:, None, :] * ph[:, None, None], np.stack([fx, fy], -1))
    return canvas


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


def _pupil_spots(
    points: np.ndarray,
    z: np.ndarray,
    optics: dict[str, float],
    half: int = 10,
    sub: int = 5,
    pupil_samples: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Shares (K, 2 half + 1, 2 half + 1) of each emitter's photons in the pixels around its own,
    and those pixels' top-left corner (K, 2): the scalar pupil field evaluated at `sub` x `sub`
    points per pixel by a matrix Fourier transform of the pupil at the emitter's exact offset
    (no FFT grid, nor any spline), |field|^2 averaged over each pixel, normalised by Parseval so
    that the whole plane holds every photon."""
    na, lam, n_medium, pixel = (
        optics["na"],
        optics["wavelength"],
        optics["refractive_index"],
        optics["pixel_size"],
    )
    cutoff = na / lam
    f = (np.arange(pupil_samples) - (pupil_samples - 1) / 2) * (2 * cutoff / (pupil_samples - 1))
    df = f[1] - f[0]
    fx, fy = np.meshgrid(f, f)
    inside = fx**2 + fy**2 <= cutoff**2
    kz = np.sqrt(np.clip((n_medium / lam) ** 2 - fx**2 - fy**2, 0, None))
    # a cylindrical lens: astigmatism along x and y, sqrt(6) rho^2 cos(2 phi), rms in waves
    rho2 = (fx**2 + fy**2) / cutoff**2
    cos2phi = np.divide(fx**2 - fy**2, fx**2 + fy**2, out=np.zeros_like(fx), where=rho2 > 0)
    astigmatism = optics.get("astigmatism", 0.0) * math.sqrt(6) * rho2 * cos2phi
    power = inside.sum() * df * df  # integral of |pupil|^2: the plane's total intensity
    first = np.rint(points).astype(np.int64) - half
    offsets = (np.arange((2 * half + 1) * sub) + 0.5) / sub - 0.5  # sample positions past each first pixel
    out = np.empty((len(points), 2 * half + 1, 2 * half + 1))
    for i, ((x, y), depth) in enumerate(zip(points, z, strict=True)):
        sx = (first[i, 0] + offsets - x) * pixel  # nm from the emitter
        sy = (first[i, 1] + offsets - y) * pixel
        pupil = np.where(inside, np.exp(2j * np.pi * (depth * kz + astigmatism)), 0)
        ex, ey = np.exp(2j * np.pi * np.outer(sx, f)), np.exp(2j * np.pi * np.outer(sy, f))
        field = ey @ pupil @ ex.T * df * df  # (rows, cols) samples
        intensity = np.abs(field) ** 2 / power * (pixel / sub) ** 2  # photons share per sample
        out[i] = intensity.reshape(2 * half + 1, sub, 2 * half + 1, sub).sum((1, 3))
    return out, first


def _add_windows(canvas: np.ndarray, frame: np.ndarray, windows: np.ndarray, first: np.ndarray) -> None:
    """Add windows (K, S, S) whose top-left pixels are `first` (K, 2) into frames `frame` of canvas."""
    t_n, h, w = canvas.shape
    steps = np.arange(windows.shape[1])
    cols = first[:, 0, None, None] + steps[None, None, :]
    rows = first[:, 1, None, None] + steps[None, :, None]
    keep = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    flat = (frame[:, None, None] * h + rows) * w + cols
    canvas += np.bincount(flat[keep], weights=windows[keep], minlength=canvas.size).reshape(canvas.shape)


PUPIL_OPTICS = {"na": 1.49, "wavelength": 680.0, "refractive_index": 1.518, "pixel_size": 100.0}


def render_pupil_movie(
    frames: int = 70,
    size: int = 128,
    seed: int = 0,
    spots: int = 40,
    z_range: tuple[float, float] = (-150.0, 150.0),
    photons: tuple[float, float] = (400.0, 4000.0),
    background: tuple[float, float] = (10.0, 20.0),
    e_per_adu: float = 0.5,
    baseline: float = 100.0,
    read_noise: float = 1.5,
    astigmatism: float = 0.0,
) -> ForeignMovie:
    """An SMLM movie through a high-NA objective: emitters at depths uniform in `z_range` nm, a
    scalar pupil PSF (NA 1.49, 680 nm, oil, 100 nm pixels; `astigmatism` rms waves of a
    cylindrical lens), photons log-uniform, a background rising from the first column to the
    last, on an sCMOS. `truth` holds the optics too, and the movie's `z` each emitter's depth
    (T, M)."""
    optics = {**PUPIL_OPTICS, "astigmatism": astigmatism}
    rng = np.random.default_rng(seed)
    lo, hi = 1.5, size - 2.5
    points = rng.uniform(lo, hi, size=(frames, spots, 2))
    light = np.exp(rng.uniform(np.log(photons[0]), np.log(photons[1]), size=(frames, spots)))
    depth = rng.uniform(*z_range, size=(frames, spots))
    windows, first = _pupil_spots(points.reshape(-1, 2), depth.ravel(), optics)
    canvas = np.zeros((frames, size, size))
    _add_windows(canvas, np.repeat(np.arange(frames), spots), windows * light.reshape(-1, 1, 1), first)
    xx = np.arange(size, dtype=np.float64)
    bg = np.broadcast_to(
        background[0] + (background[1] - background[0]) * xx / (size - 1), (size, size)
    ).copy()
    adu = _camera(rng, canvas + bg, 1.0, 0.0, read_noise, e_per_adu, baseline)
    truth: dict[str, Any] = {
        **optics,
        "sigma": 0.93,  # the in-focus PSF's Gaussian-equivalent sigma, px (least squares)
        "z_min": z_range[0],
        "z_max": z_range[1],
        "photons_min": photons[0],
        "photons_max": photons[1],
        "background_min": background[0],
        "background_max": background[1],
        "baseline": baseline,
        "e_per_adu": e_per_adu,
        "em_gain": 0.0,
        "read_noise": read_noise,
        "qe": 1.0,
        "spots_per_frame": float(spots),
    }
    return ForeignMovie(adu, points, light, truth, bg, depth)


def render_bead_stack(
    size: int = 128,
    seed: int = 1,
    beads: int = 16,
    z_step: float = 50.0,
    z_half_range: float = 600.0,
    photons: float = 20_000.0,
    background: float = 15.0,
    e_per_adu: float = 0.5,
    baseline: float = 100.0,
    read_noise: float = 1.5,
    astigmatism: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A z-stack (planes, size, size) uint16 of sparse beads on a coverslip through the same
    objective as `render_pupil_movie`, the stage moved `z_step` nm a plane from -z_half_range to
    +z_half_range; and the beads' true (x, y) (B, 2). Beads are points, at least 20 px apart."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    while len(chosen) < beads:
        xy = rng.uniform(14, size - 15, 2)
        if all(np.hypot(*(xy - other)) >= 20 for other in chosen):
            chosen.append(xy)
    where = np.array(chosen)
    depths = np.arange(-z_half_range, z_half_range + z_step / 2, z_step)
    stack = np.zeros((len(depths), size, size))
    for plane, depth in enumerate(depths):
        windows, first = _pupil_spots(
            where, np.full(beads, depth), {**PUPIL_OPTICS, "astigmatism": astigmatism}
        )
        _add_windows(stack[plane : plane + 1], np.zeros(beads, np.int64), windows * photons, first)
    adu = _camera(rng, stack + background, 1.0, 0.0, read_noise, e_per_adu, baseline)
    return adu, where


def render_blinking_movie(
    sites: np.ndarray,
    molecule: np.ndarray,
    frame: np.ndarray,
    photons: np.ndarray,
    drift: np.ndarray,
    size: int,
    seed: int = 0,
    background: float = 20.0,
    e_per_adu: float = 0.5,
    baseline: float = 100.0,
    read_noise: float = 1.5,
) -> ForeignMovie:
    """A blinking SMLM movie through the high-NA pupil (in focus) on an sCMOS: in each `frame` the
    `molecule` (an index into `sites`, px) shines `photons`, displaced by the stage's `drift`
    (frames, 2) px; a flat `background` of photons per pixel."""
    frames = len(drift)
    where = sites[molecule] + drift[frame]
    windows, first = _pupil_spots(where, np.zeros(len(where)), PUPIL_OPTICS)
    canvas = np.zeros((frames, size, size))
    _add_windows(canvas, frame, windows * photons[:, None, None], first)
    rng = np.random.default_rng(seed)
    adu = _camera(rng, canvas + background, 1.0, 0.0, read_noise, e_per_adu, baseline)
    rows = [np.flatnonzero(frame == t) for t in range(frames)]
    width = max(1, max(len(r) for r in rows))
    truth = {
        **PUPIL_OPTICS,
        "sigma": 0.93,
        "background": background,
        "e_per_adu": e_per_adu,
        "baseline": baseline,
    }
    return ForeignMovie(
        adu,
        _pad([where[r] for r in rows], width),
        _pad([photons[r] for r in rows], width),
        truth,
        np.full((size, size), background),
    )


def render_brownian_movie(
    frames: int = 300,
    size: int = 128,
    seed: int = 0,
    particles: int = 60,
    diffusion: tuple[float, float] = (0.05, 0.5),
    blink: float = 0.03,
    sigma: float = 1.2,
    photons: tuple[float, float] = (1500.0, 5000.0),
    e_per_adu: float = 2.0,
    baseline: float = 100.0,
    read_noise: float = 2.0,
) -> tuple[ForeignMovie, np.ndarray, np.ndarray]:
    """A particle-tracking movie: `particles` Brownian particles, half at each of two diffusion
    coefficients (px^2/frame), each present for a span of the movie (some enter after the
    first frame, some leave before the last, some wander out of the field), missing from a
    frame with chance `blink`; bright Gaussian spots on an uneven background (a slope and a
    broad hump) on an sCMOS. Returns the movie (points NaN padded) and, per spot in its
    points, the particle (T, M; -1 padding) and each particle's population (0 or 1)."""
    rng = np.random.default_rng(seed)
    population = np.arange(particles) % 2
    step = np.sqrt(2 * np.asarray(diffusion))[population]
    start = rng.integers(-frames // 2, frames // 2, particles)
    length = rng.integers(frames // 3, 2 * frames, particles)
    walk = rng.uniform(4, size - 4, (particles, 2))[None] + np.cumsum(
        rng.normal(size=(frames, particles, 2)) * step[None, :, None], axis=0
    )
    t = np.arange(frames)[:, None]
    shown = (t >= start) & (t < start + length) & (rng.random((frames, particles)) >= blink)
    shown &= np.all((walk > 1) & (walk < size - 2), axis=-1)
    light = np.exp(rng.uniform(np.log(photons[0]), np.log(photons[1]), particles))
    rows = [np.flatnonzero(shown[f]) for f in range(frames)]
    width = max(1, max(len(r) for r in rows))
    points = _pad([walk[f, r] for f, r in enumerate(rows)], width)
    spot_photons = _pad([light[r] for r in rows], width)
    which = np.full((frames, width), -1)
    for f, r in enumerate(rows):
        which[f, : len(r)] = r
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    hump = 40 * np.exp(-((xx - 0.3 * size) ** 2 + (yy - 0.6 * size) ** 2) / (2 * (0.25 * size) ** 2))
    bg = 15 + 25 * xx / (size - 1) + hump
    expected = _render_spots(points, spot_photons, size, size, sigma, 5) + bg
    adu = _camera(rng, expected, 1.0, 0.0, read_noise, e_per_adu, baseline)
    truth = {"sigma": sigma, "baseline": baseline, "e_per_adu": e_per_adu, "read_noise": read_noise}
    return ForeignMovie(adu, points, spot_photons, truth, bg), which, population
