"""How linked particles move: mean squared displacement and the diffusion coefficient.

For a particle diffusing in two dimensions, localized with a precision sigma per axis in
frames of exposure as long as their interval dt, the mean squared displacement over n frames
is MSD(n) = 4 D n dt + 4 sigma^2 - 8 R D dt with R = 1/6 (Michalet, Phys. Rev. E 82, 041914,
2010): the localization error adds an offset and the motion blur takes some of it away. A
straight line through the first `LAGS` lags has the slope 4 D dt whatever the offset, so the
fit's slope is D free of the localization error, and its offset gives sigma back. Each track's
MSD averages its displacements at each lag (gaps left out); the ensemble's averages every
track's displacements together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations

LAGS = 4  # lags fitted: Michalet's optimum is 2 to a few for well-localized particles
MOST_LAG = 20  # lags of the MSD curves reported
BLUR_R = 1 / 6  # Michalet's motion-blur coefficient for an exposure as long as the frame interval


@dataclass(frozen=True)
class Units:
    """How px^2 and px^2/frame are reported: µm^2 and µm^2/s where the pixel size (nm) and the
    frame interval (s) are known, else px^2 and px^2/frame."""

    area: float = 1.0
    diffusion: float = 1.0
    area_name: str = "px²"
    diffusion_name: str = "px²/frame"

    @classmethod
    def of(cls, pixel_size: float | None, frame_time: float | None) -> Units:
        if pixel_size is None or frame_time is None:
            return cls()
        area = (pixel_size / 1000) ** 2
        return cls(area, area / frame_time, "µm²", "µm²/s")


@dataclass(frozen=True)
class Motion:
    """Per track (by track number): its localizations, D (px^2/frame; NaN where too short to
    fit) and sigma (px); and the ensemble MSD by lag (px^2) with its D and sigma."""

    track: np.ndarray
    count: np.ndarray
    diffusion: np.ndarray
    sigma: np.ndarray
    lags: np.ndarray
    track_msd: np.ndarray  # (tracks, lags), NaN where a track has no such displacement
    msd: np.ndarray
    ensemble_diffusion: float
    ensemble_sigma: float


def displacements(table: Localizations, most_lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every displacement within a track over 1 to `most_lag` frames: its track, its lag, and
    its squared length (px^2)."""
    order = np.lexsort((table["frame"], table["track"]))
    track, frame = table["track"][order], table["frame"][order]
    xy = np.column_stack([table["x"], table["y"]])[order]
    tracks, lags, squares = [], [], []
    for step in range(1, most_lag + 1):  # rows `step` apart in a track are 1 to most_lag frames apart
        same = track[step:] == track[:-step]
        lag = frame[step:] - frame[:-step]
        keep = same & (lag <= most_lag)
        tracks.append(track[step:][keep])
        lags.append(lag[keep])
        squares.append(((xy[step:] - xy[:-step])[keep] ** 2).sum(axis=1))
    return np.concatenate(tracks), np.concatenate(lags), np.concatenate(squares)


def fit_line(lags: np.ndarray, msd: np.ndarray, blur: float = BLUR_R) -> tuple[float, float]:
    """D (px^2/frame) and sigma (px) from a line through the MSD at the first LAGS lags, for
    motion blur `blur` (Michalet's R: 1/6 for exposures as long as the interval, 0 for flashes)."""
    use = np.isfinite(msd[:LAGS])
    if use.sum() < 2:
        return float("nan"), float("nan")
    slope, offset = np.polyfit(lags[:LAGS][use], msd[:LAGS][use], 1)
    diffusion = slope / 4
    variance = (offset + 8 * blur * diffusion) / 4
    return float(diffusion), float(np.sqrt(variance)) if variance > 0 else 0.0


def motion(table: Localizations, least: int = LAGS + 1, blur: float = BLUR_R) -> Motion:
    """The motion of a linked table's tracks (see the module's docstring), for motion blur
    `blur`; tracks of fewer than `least` localizations get no D of their own (but count in the
    ensemble)."""
    if "track" not in table.given:
        raise PixelregError("the table is not linked: run `pixelreg track` first")
    track_ids, count = np.unique(table["track"], return_counts=True)
    track, lag, square = displacements(table, MOST_LAG)
    if not len(lag):
        raise PixelregError("no track holds two localizations: nothing moves")
    lags = np.arange(1, MOST_LAG + 1)
    index = np.searchsorted(track_ids, track)
    sums = np.zeros((len(track_ids), MOST_LAG))
    seen = np.zeros((len(track_ids), MOST_LAG))
    np.add.at(sums, (index, lag - 1), square)
    np.add.at(seen, (index, lag - 1), 1)
    track_msd = np.divide(sums, seen, out=np.full(sums.shape, np.nan), where=seen > 0)
    msd = np.divide(sums.sum(0), seen.sum(0), out=np.full(MOST_LAG, np.nan), where=seen.sum(0) > 0)
    diffusion = np.full(len(track_ids), np.nan)
    sigma = np.full(len(track_ids), np.nan)
    for i in np.flatnonzero(count >= least):
        diffusion[i], sigma[i] = fit_line(lags, track_msd[i], blur)
    ensemble = fit_line(lags, msd, blur)
    return Motion(track_ids, count, diffusion, sigma, lags, track_msd, msd, *ensemble)
