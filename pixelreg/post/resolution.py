"""How fine a localization table resolves: Fourier ring correlation and NeNA.

Fourier ring correlation (FRC; Nieuwenhuizen et al., Nature Methods 10, 557, 2013): the
localizations are split into two halves, alternate blocks of frames, each half rendered as a
histogram and Fourier transformed; on each ring of spatial frequency q the correlation of the
two transforms is FRC(q) = Re sum F1 F2* / sqrt(sum |F1|^2 sum |F2|^2). Smoothed over a few
rings, the resolution is 1/q where it first falls below 1/7. Blocks of frames rather than a
random split: a molecule's localizations in one blinking event fall in one half, so that
repeated localizations of one event do not correlate the halves beyond the structure.

NeNA (Endesfelder et al., Histochem. Cell Biol. 141, 629, 2014): the distance from each
localization to the nearest one in the next frame is, for a molecule seen in both frames,
that of two draws of its position, distributed as d / (2 s^2) exp(-d^2 / (4 s^2)) for a
precision s per axis; the histogram of distances is fitted with that and a term rising in
proportion to d for the unrelated neighbours, and s is the table's mean precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.signal.windows import tukey
from scipy.spatial import cKDTree

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations

THRESHOLD = 1 / 7
FRC_BLOCKS = 20  # the halves: this many alternate blocks of frames (each at least one frame)
MOST_SIDE = 4096  # the renderings' side at most, in bins
SMOOTHING = 1 / 50  # the FRC curve: a moving average over this share of the rings
LEAST_PAIRS = 50  # NeNA: fewer distances than this are no histogram to fit


@dataclass(frozen=True)
class RingCorrelation:
    """An FRC curve: spatial frequency (1/nm) of each ring, its correlation and smoothed
    correlation, the resolution (nm; None where the curve never falls below 1/7) and the bin (nm)."""

    frequency: np.ndarray
    correlation: np.ndarray
    smoothed: np.ndarray
    resolution_nm: float | None
    bin_nm: float
    block: int


@dataclass(frozen=True)
class Nena:
    """NeNA: the fitted precision (nm), the distances' histogram (bin centres nm, density) and
    the fitted curve there, and how many distances it fitted."""

    precision_nm: float
    centres: np.ndarray
    density: np.ndarray
    fitted: np.ndarray
    pairs: int


def ring_correlation(
    table: Localizations, pixel_size: float, bin_nm: float | None = None, block: int | None = None
) -> RingCorrelation:
    """The FRC of `table` (see the module's docstring), rendered in bins of `bin_nm` (default:
    half the median uncertainty, at least 1 nm, coarser where the field needs more than
    MOST_SIDE bins), its halves alternate blocks of `block` frames (default: FRC_BLOCKS blocks)."""
    if len(table) < 2:
        raise PixelregError(f"the table holds {len(table)} localization(s); FRC needs two halves")
    frame = table["frame"]
    frames = int(frame.max()) + 1
    if block is None:
        block = max(1, math.ceil(frames / FRC_BLOCKS))
    if block < 1:
        raise PixelregError(f"--block must be 1 frame or more, got {block}")
    half = (frame // block) % 2 == 1
    if half.all() or not half.any():
        raise PixelregError(
            f"blocks of {block:,} frames put all {frames:,} frames in one half; give --block "
            f"{max(1, frames // 2):,} or less"
        )
    x, y = table["x"] * pixel_size, table["y"] * pixel_size
    low = np.array([x.min(), y.min()])
    extent = max(x.max() - low[0], y.max() - low[1], 1.0)
    if bin_nm is None:
        typical = table.median_uncertainty()
        bin_nm = max(1.0, 0.5 * typical * pixel_size) if typical is not None else pixel_size / 10
    if not (math.isfinite(bin_nm) and bin_nm > 0):
        raise PixelregError(f"--bin must be above 0 nm, got {bin_nm:g}")
    bin_nm = max(bin_nm, extent / (MOST_SIDE - 1))
    side = int(extent / bin_nm) + 1
    window = np.outer(tukey(side, 0.25), tukey(side, 0.25))
    spectra = []
    for mine in (half, ~half):
        col = ((x[mine] - low[0]) / bin_nm).astype(np.int64)
        row = ((y[mine] - low[1]) / bin_nm).astype(np.int64)
        image = np.bincount(row * side + col, minlength=side * side).reshape(side, side)
        spectra.append(np.fft.rfft2(image * window))
    fy = np.fft.fftfreq(side)[:, None] * side
    fx = np.fft.rfftfreq(side)[None, :] * side
    ring = np.rint(np.hypot(fx, fy)).astype(np.int64).ravel()
    rings = side // 2 + 1
    inside = ring < rings
    ring = ring[inside]
    first, second = (s.ravel()[inside] for s in spectra)
    # rfft2 holds half the plane: each column but the first (and the last, of an even side)
    # stands for itself and its conjugate mirror, so it counts twice in the ring sums
    twice = np.full(fx.shape, 2.0)
    twice[:, 0] = 1.0
    if side % 2 == 0:
        twice[:, -1] = 1.0
    weight = np.broadcast_to(twice, (side, fx.shape[1])).ravel()[inside]
    cross = np.bincount(ring, weight * (first * np.conj(second)).real, minlength=rings)
    power = np.bincount(ring, weight * np.abs(first) ** 2, minlength=rings) * np.bincount(
        ring, weight * np.abs(second) ** 2, minlength=rings
    )
    correlation = np.divide(cross, np.sqrt(power), out=np.zeros(rings), where=power > 0)
    frequency = np.arange(rings) / (side * bin_nm)
    width = max(3, int(round(SMOOTHING * rings)) | 1)
    padded = np.pad(correlation, width // 2, mode="edge")
    smoothed = np.convolve(padded, np.ones(width) / width, mode="valid")
    return RingCorrelation(frequency, correlation, smoothed, crossing(frequency, smoothed), bin_nm, block)


def crossing(frequency: np.ndarray, smoothed: np.ndarray) -> float | None:
    """1 / the frequency (nm) where `smoothed` first falls from THRESHOLD or above to below it,
    by linear interpolation between rings; None where it never does (halves that never
    correlate, or correlate up to the finest ring)."""
    falls = np.flatnonzero((smoothed[:-1] >= THRESHOLD) & (smoothed[1:] < THRESHOLD)) + 1
    if not len(falls):
        return None
    i = int(falls[0])
    q0, q1, c0, c1 = frequency[i - 1], frequency[i], smoothed[i - 1], smoothed[i]
    q = q0 + (c0 - THRESHOLD) / (c0 - c1) * (q1 - q0)
    return float(1.0 / q)


def next_frame_distances(table: Localizations, most: float) -> np.ndarray:
    """The distance (px) from each localization to the nearest one in the next frame, where
    that is within `most` px."""
    frame = table["frame"]
    order = np.argsort(frame, kind="stable")
    points = np.column_stack([table["x"], table["y"]])[order]
    frame = frame[order]
    starts = np.searchsorted(frame, np.unique(frame))
    bounds = dict(
        zip(frame[starts].tolist(), zip(starts, [*starts[1:], len(frame)], strict=True), strict=True)
    )
    distances = []
    for f, (a, b) in bounds.items():
        after = bounds.get(f + 1)
        if after is None:
            continue
        d, _ = cKDTree(points[after[0] : after[1]]).query(points[a:b], distance_upper_bound=most)
        distances.append(d[np.isfinite(d)])
    return np.concatenate(distances) if distances else np.zeros(0)


def nena(table: Localizations, pixel_size: float) -> Nena:
    """NeNA of `table` (see the module's docstring), in nm at `pixel_size`."""
    typical = table.median_uncertainty() or 0.1  # px: where the table gives none
    most = 10 * typical  # px: far enough for the single-molecule term's tail
    d = next_frame_distances(table, most) * pixel_size
    if len(d) < LEAST_PAIRS:
        raise PixelregError(
            f"{len(d)} localizations have a neighbour in the next frame within "
            f"{most * pixel_size:.0f} nm; NeNA needs {LEAST_PAIRS} (it runs on a table before merge)"
        )
    counts, edges = np.histogram(d, bins=max(20, min(200, len(d) // 25)), range=(0, most * pixel_size))
    centres = 0.5 * (edges[1:] + edges[:-1])
    density = counts / (len(d) * (edges[1] - edges[0]))

    def model(r: np.ndarray, share: float, s: float, slope: float) -> np.ndarray:
        return share * r / (2 * s**2) * np.exp(-(r**2) / (4 * s**2)) + slope * r

    start = (0.8, typical * pixel_size, 0.1 / (most * pixel_size) ** 2)
    try:
        (share, s, slope), _ = curve_fit(model, centres, density, p0=start, bounds=(0, np.inf), maxfev=5000)
    except RuntimeError:
        raise PixelregError(f"the NeNA fit did not converge on {len(d):,} distances") from None
    return Nena(float(s), centres, density, model(centres, share, s, slope), len(d))
