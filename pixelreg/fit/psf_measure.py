"""Measuring a PSF from the light of spots: a z-stack of beads, or a movie's own bright isolated
spots (Li et al., Nature Methods 2018, average registered beads the same way).

Both cut a window around each spot, register the spots at sub-pixel precision against their
average, shift each onto the window's middle and average again, then interpolate the average to
the grid of a `SampledPSF`. Shifts and interpolation are Fourier ones: an objective's PSF holds
no spatial frequency above 2 NA / lambda, below the camera's Nyquist frequency wherever a pixel
is under lambda / (4 NA) (100 nm for NA 1.49 at 600 nm and longer), so a pixelated PSF's samples
determine it between them, and the average is the pixel-integrated PSF itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from pixelreg.errors import PixelregError
from pixelreg.fit.spots import find_spots
from pixelreg.simulate.psf import SampledPSF, best_gaussian

EXTRA = 3  # px cut beyond the PSF's radius: room for the shifts and the taper
OVERSAMPLE = 4  # the SampledPSF's grid points per pixel
BEAD_RADIUS = 8  # px: a bead PSF's reach (a defocused pupil PSF's rings)
MOVIE_RADIUS = 6  # px: a movie's isolated spots are 12 px apart at least
MIN_PLANES = 5
MIN_BEADS = 3
RING_SHARE = 0.25  # a peak this much weaker than a bead beside it is its ring, not a bead
REGISTRATION_STEPS = 4
GAUSSIAN_TOLERANCE = 0.01  # a movie's PSF within this share of its peak of a Gaussian is one
CENTRE_RADIUS = 3.0  # px: the in-focus plane's centroid, over this disc, is the PSF's centre


def fourier_shift(windows: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """`windows` (M, ..., S, S), S odd, moved by `shift` (M, 2) px in (x, y): out(p) = in(p - shift)."""
    side = windows.shape[-1]
    freq = np.fft.fftfreq(side)
    lead = (len(windows),) + (1,) * (windows.ndim - 3)
    along_x = np.exp(-2j * np.pi * shift[:, 0, None] * freq).reshape(*lead, 1, side)
    along_y = np.exp(-2j * np.pi * shift[:, 1, None] * freq).reshape(*lead, side, 1)
    return np.fft.ifft2(np.fft.fft2(windows) * along_x * along_y).real


def _gradients(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dy of band-limited windows (..., S, S), in Fourier space."""
    freq = np.fft.fftfreq(windows.shape[-1])
    spectrum = np.fft.fft2(windows)
    by_x = np.fft.ifft2(spectrum * (2j * np.pi * freq)[None, :]).real
    by_y = np.fft.ifft2(spectrum * (2j * np.pi * freq)[:, None]).real
    return by_x, by_y


def _taper(side: int, width: int) -> np.ndarray:
    """(S, S) 1 inside, falling to 0 by a half cosine over the outer `width` px: the window's edge
    made smooth, so that the Fourier steps see no step there."""
    distance = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float64)
    line = np.where(distance >= width, 1.0, 0.5 - 0.5 * np.cos(np.pi * (distance + 0.5) / (width + 0.5)))
    return np.outer(line, line)


def register(windows: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions (M, 2) of the spots of windows (M, Z, S, S) (window pixel coordinates),
    refined from `start` by Gauss-Newton steps that match each spot, shifted to the middle, to the
    average of the others; and that average (Z, S, S)."""
    middle = (windows.shape[-1] - 1) / 2
    positions = np.array(start, dtype=np.float64)
    average = np.zeros(windows.shape[1:])
    for _ in range(REGISTRATION_STEPS):
        shifted = fourier_shift(windows, middle - positions)
        total = shifted.sum(0)
        others = (total[None] - shifted) / max(len(windows) - 1, 1)  # each spot against the rest
        by_x, by_y = _gradients(shifted)
        residual = shifted - others
        a = np.stack(
            [
                np.stack([(by_x * by_x).sum((1, 2, 3)), (by_x * by_y).sum((1, 2, 3))], -1),
                np.stack([(by_x * by_y).sum((1, 2, 3)), (by_y * by_y).sum((1, 2, 3))], -1),
            ],
            -2,
        )
        b = np.stack([(by_x * residual).sum((1, 2, 3)), (by_y * residual).sum((1, 2, 3))], -1)
        step = np.linalg.solve(a + 1e-12 * np.eye(2), b[..., None])[..., 0]
        positions = positions - np.clip(step, -0.5, 0.5)
        average = total / len(windows)
    return positions, fourier_shift(windows, middle - positions).mean(0) if len(windows) else average


def _centre(plane: np.ndarray) -> np.ndarray:
    """(x, y) of the plane's centre of light over a disc of CENTRE_RADIUS px around it, found by
    moving the disc until it is centred: for a symmetric spot, its centre of symmetry."""
    middle = (plane.shape[-1] - 1) / 2
    steps = np.arange(plane.shape[-1]) - middle
    at = np.zeros(2)
    for _ in range(20):
        moved = fourier_shift(plane[None], -at[None])[0]  # the centre found so far, in the middle
        disc = np.hypot(steps[None, :], steps[:, None]) <= CENTRE_RADIUS
        light = np.clip(moved, 0, None) * disc
        offset = np.array([(light * steps[None, :]).sum(), (light * steps[:, None]).sum()]) / light.sum()
        at = at + offset
        if np.abs(offset).max() < 1e-5:
            break
    return middle + at


def upsample(average: np.ndarray, radius: int, oversample: int = OVERSAMPLE) -> np.ndarray:
    """(Z, G, G) the band-limited planes `average` (Z, S, S), S odd, read between their pixels by
    trigonometric interpolation every 1/oversample px within radius + 1 px of the middle:
    a SampledPSF's grid, G = 2 oversample (radius + 1) + 1."""
    side = average.shape[-1]
    middle = (side - 1) / 2
    freq = np.fft.fftfreq(side)
    at = middle + np.arange(-oversample * (radius + 1), oversample * (radius + 1) + 1) / oversample
    reader = np.exp(2j * np.pi * np.outer(at, freq)) / side  # (G, S): the inverse DFT at any place
    spectrum = np.fft.fft2(average)
    return np.einsum("gi,zij,hj->zgh", reader, spectrum, reader).real


@dataclass
class BeadPSF:
    """A PSF measured from beads, and what was found on the way (for the figure and the table)."""

    psf: SampledPSF
    beads: np.ndarray  # (B, 2) the registered beads' (x, y) in the stack
    left_out: int  # beads found but touching another or the edge
    focus_plane: float  # the plane (fractional) of the sharpest focus


def _saturation_level(stack: np.ndarray) -> float:
    """The level at which a stack clips: the top of its integer type, or a top value many share."""
    top = float(stack.max())
    if np.issubdtype(stack.dtype, np.integer) and top >= np.iinfo(stack.dtype).max:
        return top
    return top if int((stack == top).sum()) >= 20 else math.inf


def psf_from_beads(stack: np.ndarray, z_step: float, radius: int = BEAD_RADIUS) -> BeadPSF:
    """The PSF of a z-stack (Z, H, W) of sparse beads (raw ADU, planes z_step nm apart): beads
    found in the brightest projection, those touching another or the edge left out, each window
    less its border's median in focus and over the bead's light in focus, registered, averaged;
    its focus at its sharpest plane and its centre at that plane's centre of light."""
    if stack.ndim != 3:
        raise PixelregError(f"a bead stack is (planes, rows, columns), got {stack.ndim} dimensions")
    planes, height, width = stack.shape
    if planes < MIN_PLANES:
        raise PixelregError(f"a bead stack needs at least {MIN_PLANES} planes to span focus, got {planes}")
    if not (z_step > 0 and math.isfinite(z_step)):
        raise PixelregError(f"--z-step must be above 0 nm, got {z_step:g}")
    reach = radius + EXTRA
    if min(height, width) < 2 * reach + 1:
        raise PixelregError(
            f"bead planes of {height}x{width} are smaller than one bead's window, {2 * reach + 1} px"
        )
    brightest = torch.from_numpy(stack.max(0).astype(np.float32))[None, None]
    peaks = find_spots(brightest)[0]  # (S, 4): frame, row, column, height
    if len(peaks) == 0:
        raise PixelregError("no bead found in the stack: nothing stands 5 noise sigmas above its background")
    peaks = peaks[np.argsort(-peaks[:, 3])]
    keep, touching = [], 0
    for i, (_, row, col, peak) in enumerate(peaks):
        near = [
            j
            for j in range(len(peaks))
            if j != i and np.hypot(*(peaks[j, 1:3] - (row, col))) < 2 * (radius + 1)
        ]
        if any(peaks[j, 3] > peak for j in near) and all(
            peaks[j, 3] * RING_SHARE > peak for j in near if peaks[j, 3] > peak
        ):
            continue  # a ring of a brighter bead, or its noise
        if any(peaks[j, 3] >= RING_SHARE * peak for j in near):
            touching += 1
            continue
        if not (reach <= row < height - reach and reach <= col < width - reach):
            touching += 1
            continue
        keep.append((row, col))
    if len(keep) < MIN_BEADS:
        raise PixelregError(
            f"{len(keep)} bead(s) stand alone in the stack ({touching} touch another bead or the edge); "
            f"at least {MIN_BEADS} are needed, {2 * (radius + 1)} px apart"
        )
    where = np.array(keep, dtype=np.int64)
    steps = np.arange(-reach, reach + 1)
    rows = where[:, 0, None, None, None] + steps[None, None, :, None]
    cols = where[:, 1, None, None, None] + steps[None, None, None, :]
    windows = stack[np.arange(planes)[None, :, None, None], rows, cols].astype(np.float64)  # (B, Z, S, S)
    if (windows >= _saturation_level(stack)).any():
        raise PixelregError(
            f"beads saturate the camera (pixels at {stack.max()} ADU): record the stack with less light"
        )
    # each bead's background: its window's border in the sharpest plane, which defocused rings
    # have not reached, the same in every plane
    sharpest = int(np.argmax(windows.max((0, 2, 3))))
    plane = windows[:, sharpest]
    border = np.concatenate([plane[:, 0], plane[:, -1], plane[:, 1:-1, 0], plane[:, 1:-1, -1]], -1)
    windows = (windows - np.median(border, -1)[:, None, None, None]) * _taper(2 * reach + 1, EXTRA - 1)
    light = windows.sum((2, 3)).max(1)  # each bead's light (ADU) in its window, in focus
    windows = windows / light[:, None, None, None]
    focus = _focus_plane(windows.mean(0))
    start = np.array([_centre(w[int(round(focus))]) for w in windows])
    positions, average = register(windows, start)
    centre = _centre(average[int(round(focus))])
    middle = (2 * reach) / 2
    average = fourier_shift(average[None], (middle - centre)[None])[0]
    psf = SampledPSF(upsample(average, radius), OVERSAMPLE, float(z_step), -focus * float(z_step), "beads")
    if psf.tells_depth:  # astigmatic: the focal plane is where the spot is round, between the foci
        shift = psf.round_depth()
        psf = replace(psf, z_first=psf.z_first - shift)
        focus += shift / float(z_step)
    beads = positions - middle + where[:, ::-1] + (centre - middle)
    return BeadPSF(psf, beads, touching, focus)


def _focus_plane(planes: np.ndarray) -> float:
    """The plane (fractional) of the highest peak: a parabola through the best and its neighbours."""
    peak = planes.max((-2, -1))
    best = int(np.argmax(peak))
    if 0 < best < len(peak) - 1:
        left, mid, right = peak[best - 1 : best + 2]
        curve = left - 2 * mid + right
        if curve < 0:
            return best + float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5))
    return float(best)


@dataclass
class MoviePSF:
    """A PSF measured from a movie's bright isolated spots, and how far it is from a Gaussian."""

    psf: SampledPSF
    spots: int  # spots averaged
    misfit: float  # rms of (average - best Gaussian) over the central pixels, share of photons ...
    noise: float  # ... the rms of the average's own noise there (half the halves' difference) ...
    peak: float  # ... and the average's peak

    @property
    def gaussian_suffices(self) -> bool:
        """Whether the best pixelated Gaussian is within the average's noise of it, or within
        GAUSSIAN_TOLERANCE of its peak (a Gaussian's own average misses it by about that much: a
        Gaussian of 1 px is not quite band-limited, so the Fourier shifts alias it a little)."""
        return self.misfit <= max(2.0 * self.noise, GAUSSIAN_TOLERANCE * self.peak)


def psf_from_spots(photons: np.ndarray, fitted: np.ndarray, radius: int = MOVIE_RADIUS) -> MoviePSF:
    """The in-focus PSF of a movie from windows (M, S, S) of photons around bright isolated
    spots, S = 2 (radius + EXTRA) + 1, and their Gaussian fits (M, 5: x, y, photons, background,
    sigma in window coordinates): each less its border's median (a Gaussian's fitted background
    would take in the rings) and over its fitted photons, registered, averaged, and scaled to
    hold the window's light; beside it how far the best pixelated Gaussian is from it."""
    reach = radius + EXTRA
    border = np.concatenate([photons[:, 0], photons[:, -1], photons[:, 1:-1, 0], photons[:, 1:-1, -1]], -1)
    windows = (photons - np.median(border, -1)[:, None, None]) / fitted[:, 2, None, None]
    windows = (windows * _taper(2 * reach + 1, EXTRA - 1))[:, None]  # one plane each
    positions, average = register(windows, fitted[:, :2])
    centre = _centre(average[0])
    middle = float(reach)
    scale = float(average.sum())  # the window's light over a Gaussian fit's photons
    average = fourier_shift(average[None], (middle - centre)[None])[0] / scale
    shifted = fourier_shift(windows, middle - positions + (middle - centre))[:, 0] / scale
    halves = shifted[0::2].mean(0), shifted[1::2].mean(0)
    steps = np.arange(-reach, reach + 1)
    inner = np.hypot(steps[None, :], steps[:, None]) <= 3
    gaussian = best_gaussian(average[0])[1]
    misfit = float(np.sqrt(np.mean((average[0] - gaussian)[inner] ** 2)))
    noise = float(np.sqrt(np.mean(((halves[0] - halves[1])[inner] / 2) ** 2)))
    psf = SampledPSF(upsample(average, radius), OVERSAMPLE, 1.0, 0.0, f"movie, {len(windows)} spots")
    return MoviePSF(psf, len(windows), misfit, noise, float(average.max()))
