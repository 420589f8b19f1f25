"""The simulated twin of a calibrated movie: frames rendered from what `calibrate` measured, beside
the movie, compared by the statistics a model of it depends on. A spec that cannot have made the
movie is refused with the numbers; one that can is the user's evidence that the model was
trained for their data.

The twin is pixelreg's own rendering (`simulate.render.expected_image` through the spec's
camera): spots of the spec's blur at uniform positions, as many per frame as the movie has on
average (Poisson), with photons drawn from the spots' fitted photons, on the movie's own
background read back through the camera. Both are measured the same way (`frame_statistics`):
the background's level and noise, the share of background pixels far out in the noise's tails
(hot pixels, salt and pepper: noise that no camera model here describes), the spots' peak
heights and widths, and spots per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from pixelreg.fit.background import background_map
from pixelreg.fit.spots import SPOT_BLOCK, find_spots
from pixelreg.simulate.render import Photometry, expected_image
from pixelreg.simulate.spec import DataSpec

TWIN_FRAMES = 20  # frames of each compared, the movie's first
TWIN_SIDE = 128  # px: each compared on its central square of this side at most
WIDTH_RADIUS = 3  # px: a spot's width is its second moment within this many pixels
OUTLIER_SIGMAS = 5.0  # a background pixel this far from the level is an outlier (Gaussian: 6e-7)
OUTLIER_SHARE = 0.01  # the movie's and the twin's shares of outliers differ by at most this


@dataclass(frozen=True)
class Statistic:
    """One statistic of the movie and of its twin, and the rule by which they must agree."""

    name: str
    unit: str
    movie: float
    twin: float
    low: float  # the twin's value over the movie's (or, for a level, the difference in noise sigmas)
    high: float

    @property
    def measure(self) -> float:
        """What the rule bounds: the ratio twin / movie, or for the background level, the
        difference in units of the movie's background noise (set by `compare`)."""
        return self.twin / self.movie if self.movie else math.inf

    @property
    def agrees(self) -> bool:
        """Within the rule; a statistic neither has (no spot bright enough for a width) agrees."""
        if math.isnan(self.movie) and math.isnan(self.twin):
            return True
        return bool(self.low <= self.measure <= self.high)


@dataclass(frozen=True)
class LevelStatistic(Statistic):
    """The background level: the two must differ by less than the movie's noise allows."""

    noise: float = 1.0

    @property
    def measure(self) -> float:
        return (self.twin - self.movie) / max(self.noise, 1e-9)


@dataclass(frozen=True)
class ShareStatistic(Statistic):
    """A share of pixels: the two must differ by at most `low`..`high` in absolute terms."""

    @property
    def measure(self) -> float:
        return self.twin - self.movie


@dataclass
class Twin:
    """The twin's frames beside the movie's, and their statistics side by side."""

    movie: np.ndarray  # (T, H, W) ADU, the movie's compared frames
    frames: np.ndarray  # (T, H, W) ADU, the twin's
    statistics: list[Statistic]
    peaks: tuple[np.ndarray, np.ndarray]  # the spots' peak heights above background: movie's, twin's
    background: tuple[np.ndarray, np.ndarray]  # a sample of background pixels: movie's, twin's

    @property
    def agrees(self) -> bool:
        return all(s.agrees for s in self.statistics)

    def disagreements(self) -> list[str]:
        """Each statistic that disagrees, in words with its numbers."""

        def value(number: float) -> str:
            return "none" if math.isnan(number) else f"{number:.4g}"

        return [
            f"{s.name}: the movie's {value(s.movie)} {s.unit}, the twin's {value(s.twin)}".replace("  ", " ")
            for s in self.statistics
            if not s.agrees
        ]

    def summary(self) -> list[dict[str, object]]:
        """The statistics as plain data (for the spec's JSON and `--json`)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) or math.isinf(value) else value

        return [
            {
                "name": s.name,
                "unit": s.unit,
                "movie": number(s.movie),
                "twin": number(s.twin),
                "agrees": s.agrees,
            }
            for s in self.statistics
        ]


def central(frames: np.ndarray) -> np.ndarray:
    """The frames compared: the first TWIN_FRAMES, their central TWIN_SIDE square at most."""
    _, height, width = frames.shape
    top, left = ((side - min(side, TWIN_SIDE)) // 2 for side in (height, width))
    return np.ascontiguousarray(frames[:TWIN_FRAMES, top : top + TWIN_SIDE, left : left + TWIN_SIDE])


def render_twin(
    spec: DataSpec, movie: np.ndarray, spots_per_frame: float, photons: np.ndarray, seed: int = 0
) -> np.ndarray:
    """ADU frames like `movie` (T, H, W) as `spec` describes it: `spots_per_frame` spots a frame
    (Poisson), photons drawn from `photons`, on the movie's own background (block medians, read
    back to photons through the spec's camera, so a baseline above the light shows)."""
    rng = np.random.default_rng(seed)
    count, height, width = movie.shape
    numbers = np.asarray(rng.poisson(max(spots_per_frame, 0.0), size=count))
    most = max(1, int(numbers.max(initial=0)))
    points = np.full((count, most, 2), np.nan)
    for t, number in enumerate(numbers):
        points[t, :number, 0] = rng.uniform(-0.5, width - 0.5, size=number)
        points[t, :number, 1] = rng.uniform(-0.5, height - 0.5, size=number)
    drawn = rng.choice(photons, size=(count, most)) if len(photons) else np.full((count, most), spec.photons)
    light = Photometry(drawn, np.full((count, most), spec.blur), np.zeros(count))
    framed = replace(spec, height=height, width=width)
    level = background_map(torch.from_numpy(movie.astype(np.float32))[:, None], SPOT_BLOCK)  # (T,) or maps
    level_adu = np.broadcast_to(level.double().mean(0).numpy().squeeze(), (height, width))
    background = np.clip(spec.camera.photons(level_adu), 0.0, None)
    return spec.camera.expose(expected_image(points, framed, light) + background[None], rng)


def frame_statistics(frames: np.ndarray) -> dict[str, np.ndarray | float]:
    """The statistics compared: background level (median of the pixels away from spots), its
    noise (from neighbouring background pixels' differences, so a gradient does not count), the
    spots' peak heights above background and widths (second moments of the brighter ones), and
    spots per frame."""
    peaks, near = find_spots(torch.from_numpy(frames.astype(np.float32))[:, None])
    values = frames.astype(np.float64)
    quiet = ~near
    background = values[quiet]
    pairs = quiet[:, :, 1:] & quiet[:, :, :-1]
    steps = (values[:, :, 1:] - values[:, :, :-1])[pairs]
    noise = (
        float(1.4826 * np.median(np.abs(steps - np.median(steps))) / math.sqrt(2)) if steps.size else math.nan
    )
    heights = peaks[:, 3] if len(peaks) else np.zeros(0)
    level = float(np.median(background)) if background.size else math.nan
    return {
        "level": level,
        "noise": noise,
        "outliers": float(np.mean(np.abs(background - level) > OUTLIER_SIGMAS * noise))
        if background.size
        else 0.0,
        "heights": heights,
        "widths": _widths(values, peaks, noise),
        "spots": len(peaks) / len(frames),
        "background": background[:: max(1, background.size // 20_000)],
    }


def _widths(values: np.ndarray, peaks: np.ndarray, noise: float) -> np.ndarray:
    """The second-moment sigma (px) of spots standing over 10 noise sigmas, whole in the frame."""
    r = WIDTH_RADIUS
    _, height, width = values.shape
    if len(peaks) == 0:
        return np.zeros(0)
    t, y, x = (peaks[:, i].astype(np.int64) for i in range(3))
    keep = (peaks[:, 3] > 10 * noise) & (y >= r) & (y < height - r) & (x >= r) & (x < width - r)
    t, y, x = t[keep], y[keep], x[keep]
    offsets = np.arange(-r, r + 1)
    windows = values[t[:, None, None], y[:, None, None] + offsets[None, :, None], x[:, None, None] + offsets]
    border = np.concatenate(
        [windows[:, 0], windows[:, -1], windows[:, 1:-1, 0], windows[:, 1:-1, -1]], axis=1
    )
    light = np.clip(windows - np.median(border, axis=1)[:, None, None], 0.0, None)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    total = light.sum((1, 2))
    cy = (light * dy).sum((1, 2)) / np.maximum(total, 1e-9)
    cx = (light * dx).sum((1, 2)) / np.maximum(total, 1e-9)
    second = (light * ((dy - cy[:, None, None]) ** 2 + (dx - cx[:, None, None]) ** 2)).sum((1, 2))
    return np.sqrt(second / np.maximum(2 * total, 1e-9))


def compare(movie: np.ndarray, twin: np.ndarray) -> Twin:
    """The movie's frames and its twin's, measured alike and judged by each statistic's rule."""
    ours, theirs = frame_statistics(movie), frame_statistics(twin)
    noise = float(ours["noise"])

    def median(values: object) -> float:
        array = np.asarray(values)
        return float(np.median(array)) if array.size else math.nan

    statistics: list[Statistic] = [
        LevelStatistic(
            "background level", "ADU", float(ours["level"]), float(theirs["level"]), -1.0, 1.0, noise
        ),
        Statistic("background noise", "ADU", noise, float(theirs["noise"]), 0.8, 1.25),
        ShareStatistic(
            f"background pixels beyond {OUTLIER_SIGMAS:g} noise sigmas",
            "share",
            float(ours["outliers"]),
            float(theirs["outliers"]),
            -OUTLIER_SHARE,
            OUTLIER_SHARE,
        ),
        Statistic(
            "spot peak height (median)", "ADU", median(ours["heights"]), median(theirs["heights"]), 0.67, 1.5
        ),
        Statistic("spot width (median)", "px", median(ours["widths"]), median(theirs["widths"]), 0.8, 1.25),
        Statistic("spots per frame", "", float(ours["spots"]), float(theirs["spots"]), 0.67, 1.5),
    ]
    peaks = (np.asarray(ours["heights"]), np.asarray(theirs["heights"]))
    background = (np.asarray(ours["background"]), np.asarray(theirs["background"]))
    return Twin(movie, twin, statistics, peaks, background)
