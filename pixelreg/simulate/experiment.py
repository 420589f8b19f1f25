"""A simulated SMLM experiment as a localization table, with its truth: blinking molecules on
filaments, a drifting stage, and each localization scattered by its own precision.

Each molecule blinks on and off, on for a geometric number of frames (mean `on_frames`) and off
for a geometric number (mean `off_frames`); each frame it is on, it gives `photons` drawn from
an exponential distribution above `least_photons`, and is localized with the precision of
Thompson et al. 2002 at its photons, the `background` and a Gaussian PSF of `psf_sigma` px,
scattered by that much (a localizer at the bound) and moved by the stage's drift, a slow smooth
curve whose peak-to-peak span is `drift_nm`. This is a table, not a movie: it tests what comes
after localization with a truth no localizer blurs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pixelreg.fit.bounds import thompson_variance
from pixelreg.io.locs import COLUMNS, Localizations


@dataclass(frozen=True)
class Experiment:
    """The observed table (drift included, px), and the truth: each localization's molecule,
    blinking event and true position (no drift), the drift of every frame (px, zero at frame
    0), and the molecules' positions."""

    table: Localizations
    molecule: np.ndarray
    event: np.ndarray
    true_x: np.ndarray
    true_y: np.ndarray
    drift: np.ndarray
    sites: np.ndarray

    @property
    def events(self) -> int:
        return int(self.event.max(initial=-1)) + 1


def filaments(rng: np.random.Generator, count: int, size: float, spacing: float) -> np.ndarray:
    """(N, 2) points along `count` gently curved lines across a `size`-px field, `spacing` px apart."""
    points = []
    for _ in range(count):
        start = rng.uniform(0.1, 0.9, 2) * size
        angle = rng.uniform(0, 2 * math.pi)
        bend = rng.normal(0, 0.5 / size)  # radians per px: a gentle curve
        length = rng.uniform(0.5, 1.0) * size
        steps = int(length / spacing)
        heading = angle + bend * spacing * np.arange(steps)
        path = start + np.cumsum(spacing * np.column_stack([np.cos(heading), np.sin(heading)]), axis=0)
        inside = np.all((path > 1) & (path < size - 1), axis=1)
        points.append(path[inside])
    return np.concatenate(points)


def smooth_drift(rng: np.random.Generator, frames: int, span_px: float) -> np.ndarray:
    """(frames, 2) a slow random curve per axis, zero at frame 0, peak-to-peak `span_px` in x
    and 0.6 of it in y: three sinusoids of periods from 0.8 of the movie to three times it."""
    t = np.arange(frames) / frames
    drift = np.zeros((frames, 2))
    for axis, span in enumerate((span_px, 0.6 * span_px)):
        curve = np.zeros(frames)
        for period in (3.0, 1.5, 0.8):
            curve += rng.normal() * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
        curve = curve - curve[0]
        drift[:, axis] = curve * span / max(float(np.ptp(curve)), 1e-12)
    return drift


def blinking_experiment(
    seed: int = 0,
    frames: int = 3000,
    size: int = 64,
    filaments_count: int = 10,
    spacing_nm: float = 8.0,
    on_frames: float = 3.0,
    off_frames: float = 1500.0,
    photons: float = 1500.0,
    least_photons: float = 300.0,
    background: float = 20.0,
    psf_sigma: float = 1.3,
    pixel_size: float = 100.0,
    drift_nm: float = 80.0,
) -> Experiment:
    """A simulated experiment (see the module's docstring); lengths in px but where named nm."""
    rng = np.random.default_rng(seed)
    sites = filaments(rng, filaments_count, size, spacing_nm / pixel_size)
    drift = smooth_drift(rng, frames, drift_nm / pixel_size)
    molecule, frame, event = [], [], []
    count = 0
    for m in range(len(sites)):  # alternate off and on periods from a random phase
        t = -int(rng.geometric(1 / off_frames))
        on = False
        while t < frames:
            length = int(rng.geometric(1 / (on_frames if on else off_frames)))
            if on and t + length > 0:
                shown = np.arange(max(t, 0), min(t + length, frames))
                molecule.append(np.full(len(shown), m))
                frame.append(shown)
                event.append(np.full(len(shown), count))
                count += 1
            t += length
            on = not on
    molecule_ = np.concatenate(molecule)
    frame_ = np.concatenate(frame)
    event_ = np.concatenate(event)
    n = len(frame_)
    spot_photons = least_photons + rng.exponential(photons - least_photons, n)
    uncertainty = np.sqrt(thompson_variance(spot_photons, background, psf_sigma))  # type: ignore[arg-type]
    true_xy = sites[molecule_]
    seen = true_xy + drift[frame_] + rng.normal(size=(n, 2)) * uncertainty[:, None]
    order = np.lexsort((seen[:, 0], frame_))
    table = Localizations.from_fields(
        f"experiment-{seed}",
        COLUMNS,
        frame=frame_[order],
        x=seen[order, 0],
        y=seen[order, 1],
        photons=spot_photons[order],
        background=np.full(n, background),
        uncertainty=uncertainty[order],
    ).with_columns()
    return Experiment(
        table, molecule_[order], event_[order], true_xy[order, 0], true_xy[order, 1], drift, sites
    )
