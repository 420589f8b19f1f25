"""The stage's drift, estimated from the localizations themselves and taken away.

Redundant cross-correlation (RCC; Wang et al., Optics Express 22, 15982, 2014): the movie is
cut into segments of frames; each segment's localizations are rendered as a histogram of bins
twice the median uncertainty (not a camera pixel: the peak's position is only as fine as the
bins), every pair of segments is cross-correlated, and the segments' shifts are the
least-squares solution of all pairs' peak positions, pairs that disagree with it dropped and
the rest solved again. A cubic spline through the shifts, at the segments' mean frames, gives
every frame's drift.

Where the sample holds fiducials (spots present in most frames), their mean track is the drift.
The drift is zero at the start: at the first segment's mean frame (the earliest the correlation
measures; frames before it are extrapolated), or for fiducials at the first frame. A
localization of frame f, minus the drift of frame f, is where it would be had the stage stood
still since.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations

LEAST_SEGMENT_LOCS = 200  # RCC: fewer localizations than this in a segment give no reliable peak
SEGMENT_LOCS = 1000  # RCC's segments, when chosen from the data: this many localizations each...
MOST_SEGMENTS = 30  # ...but no more segments than this (pairs grow as the square)
MOST_BINS = 2048  # RCC: the renderings' side at most
DEFAULT_UNCERTAINTY = 0.1  # px: where a table gives none
FIDUCIAL_SHARE = 0.5  # --fiducials: a spot present in more of the frames than this is a fiducial


@dataclass(frozen=True)
class Drift:
    """The drift of every frame 0 ... frames-1 (px), the frames per RCC segment (0 for
    fiducials), and the estimate's parts: the segments' mean frames and their shifts (px)."""

    x: np.ndarray
    y: np.ndarray
    segment: int
    method: str
    centres: np.ndarray
    shifts: np.ndarray


def undrift(table: Localizations, drift: Drift) -> Localizations:
    """`table` with each localization's frame's drift taken away."""
    locs = table.locs.copy()
    frame = np.clip(locs["frame"], 0, len(drift.x) - 1)
    locs["x"] -= drift.x[frame]
    locs["y"] -= drift.y[frame]
    return Localizations(table.path, locs, table.columns, table.given)


def check_table(table: Localizations) -> None:
    """Refuse a table that no drift can be estimated from."""
    if len(table) == 0:
        raise PixelregError("the table holds no localizations")
    if table["frame"].min() < 0:
        raise PixelregError(
            f"the table holds a localization of frame {table['frame'].min()} (before the first)"
        )
    if table["frame"].max() == table["frame"].min():
        raise PixelregError("the table holds localizations of one frame only; drift needs many")


def segment_edges(frames: int, segment: int) -> np.ndarray:
    """Frame edges of segments of `segment` frames; a last short one joins the one before."""
    edges = np.arange(0, frames, segment)
    if len(edges) > 1 and frames - edges[-1] < segment / 2:
        edges = edges[:-1]
    return np.append(edges, frames)


def fewest_frames(frame: np.ndarray, frames: int, least: int) -> int | None:
    """The shortest segment (frames) in which every segment holds `least` localizations, if
    two or more such segments fit in the movie."""
    segment = 1
    while segment <= frames // 2:
        counts = np.histogram(frame, segment_edges(frames, segment))[0]
        if counts.min() >= least:
            return segment
        segment = max(segment + 1, math.ceil(segment * 1.1))
    return None


def choose_segment(frame: np.ndarray, frames: int, segment: int | None) -> int:
    """RCC's segment: `segment` if it leaves every segment LEAST_SEGMENT_LOCS localizations,
    else an error that says which would; None: from the data (SEGMENT_LOCS each, at most
    MOST_SEGMENTS segments, never fewer localizations than the least)."""
    workable = fewest_frames(frame, frames, LEAST_SEGMENT_LOCS)
    if workable is None:
        raise PixelregError(
            f"{len(frame):,} localizations in {frames:,} frames are too few for drift: two segments "
            f"of {LEAST_SEGMENT_LOCS} localizations each are the least"
        )
    if segment is not None:
        if segment < 1:
            raise PixelregError(f"--segment must be 1 frame or more, got {segment}")
        counts = np.histogram(frame, segment_edges(frames, segment))[0]
        if len(counts) < 2 or counts.min() < LEAST_SEGMENT_LOCS:
            raise PixelregError(
                f"segments of {segment:,} frames hold as few as {counts.min():,} localizations "
                f"({'one segment' if len(counts) < 2 else 'RCC needs ' + str(LEAST_SEGMENT_LOCS)}); "
                f"give --segment {workable:,} or more, up to {frames // 2:,}"
            )
        return segment
    wanted = max(len(frame) / SEGMENT_LOCS, 2)
    segment = max(workable, math.ceil(frames / min(wanted, MOST_SEGMENTS)))
    while segment <= frames // 2:  # every segment at least the least, as a given --segment must
        if np.histogram(frame, segment_edges(frames, segment))[0].min() >= LEAST_SEGMENT_LOCS:
            return segment
        segment = math.ceil(segment * 1.1)
    return workable


def estimate_drift(table: Localizations, segment: int | None = None) -> Drift:
    """The drift of `table`'s frames by RCC with `segment` frames a segment (None: chosen from
    the data; see the module's docstring), zero at the first segment's mean frame."""
    check_table(table)
    segment = choose_segment(table["frame"], int(table["frame"].max()) + 1, segment)
    sigma = table.median_uncertainty() or DEFAULT_UNCERTAINTY
    drift, centres, shifts = rcc_drift(table, segment, float(np.clip(2 * sigma, 0.05, 0.5)))
    origin = drift[int(round(centres[0]))].copy()
    drift -= origin
    return Drift(drift[:, 0], drift[:, 1], segment, "rcc", centres, shifts - origin)


def rcc_drift(table: Localizations, segment: int, bin_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RCC with segments of `segment` frames rendered in bins of `bin_px`: the drift of every
    frame (frames, 2), the segments' mean frames and their shifts (px)."""
    frame = table["frame"]
    frames = int(frame.max()) + 1
    edges = segment_edges(frames, segment)
    which = np.searchsorted(edges, frame, side="right") - 1
    shifts = rcc_shifts(table["x"], table["y"], which, len(edges) - 1, bin_px)
    centres = np.bincount(which, frame) / np.bincount(which)
    return per_frame(centres, shifts, frames), centres, shifts


def rcc_shifts(x: np.ndarray, y: np.ndarray, which: np.ndarray, segments: int, bin_px: float) -> np.ndarray:
    """(segments, 2) shifts (px, mean zero) by redundant cross-correlation of the segments'
    renderings at `bin_px` a bin, blurred by one bin."""
    # the field: where all but a stray thousandth of the localizations lie (one row far away
    # must not coarsen the bins of all); the strays are left out of the correlation
    low = np.array([np.quantile(x, 0.0005), np.quantile(y, 0.0005)]) - 2
    high = np.array([np.quantile(x, 0.9995), np.quantile(y, 0.9995)]) + 2
    extent = float(max(high - low))
    bin_px = max(bin_px, extent / MOST_BINS)
    side = 2 ** math.ceil(math.log2(extent / bin_px))  # FFTs of powers of two
    inside = (x >= low[0]) & (x < high[0]) & (y >= low[1]) & (y < high[1])
    col = ((x - low[0]) / bin_px).astype(np.int64)
    row = ((y - low[1]) / bin_px).astype(np.int64)
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    blur = np.exp(-2 * math.pi**2 * (fx**2 + fy**2))  # a Gaussian of one bin
    spectra = []
    for k in range(segments):
        mine = (which == k) & inside
        image = np.bincount(row[mine] * side + col[mine], minlength=side * side).reshape(side, side)
        spectra.append((np.fft.rfft2(image.astype(np.float64)) * blur).astype(np.complex64))
    reach = side // 4  # the most shift sought: a quarter of the rendering
    pairs, measured = [], []
    for i in range(segments):
        for j in range(i + 1, segments):
            correlation = np.fft.irfft2(spectra[j] * np.conj(spectra[i]), s=(side, side))
            measured.append(peak(np.fft.fftshift(correlation), reach) * bin_px)
            pairs.append((i, j))
    return solve_pairs(np.array(pairs), np.array(measured), segments)


def peak(correlation: np.ndarray, reach: int) -> np.ndarray:
    """The (x, y) offset from the centre of a centred correlation's highest point within `reach`
    bins, to a fraction of a bin by a parabola through the logarithms of it and its neighbours."""
    centre = correlation.shape[0] // 2
    window = correlation[centre - reach : centre + reach + 1, centre - reach : centre + reach + 1]
    highest = np.unravel_index(int(np.argmax(window)), window.shape)
    row, col = (int(np.clip(i, 1, 2 * reach - 1)) for i in highest)

    def vertex(a: float, b: float, c: float) -> float:
        a, b, c = (math.log(max(v, 1e-12 * max(b, 1e-300))) for v in (a, b, c))
        curvature = a - 2 * b + c
        return 0.0 if curvature >= 0 else float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5))

    dx = vertex(window[row, col - 1], window[row, col], window[row, col + 1])
    dy = vertex(window[row - 1, col], window[row, col], window[row + 1, col])
    return np.array([col + dx - reach, row + dy - reach])


def solve_pairs(pairs: np.ndarray, measured: np.ndarray, segments: int) -> np.ndarray:
    """Shifts (segments, 2), mean zero, whose differences best fit the pairs' (shift j - shift
    i = measured); pairs whose error is over three times the median error (and over 0.05 px)
    are dropped, and the rest solved again, while every segment keeps a pair."""
    keep = np.ones(len(pairs), bool)
    for _ in range(3):
        design = np.zeros((keep.sum() + 1, segments))
        design[np.arange(keep.sum()), pairs[keep, 1]] = 1
        design[np.arange(keep.sum()), pairs[keep, 0]] = -1
        design[-1] = 1  # the shifts' mean is zero
        target = np.vstack([measured[keep], np.zeros((1, 2))])
        shifts = np.linalg.lstsq(design, target, rcond=None)[0]
        error = np.hypot(*(measured - (shifts[pairs[:, 1]] - shifts[pairs[:, 0]])).T)
        limit = max(3 * float(np.median(error)), 0.05)
        wanted = error <= limit
        linked = connected_components(
            coo_matrix((np.ones(wanted.sum()), pairs[wanted].T), shape=(segments, segments)), directed=False
        )[0]
        if wanted.sum() == keep.sum() or linked > 1:  # every segment still tied to every other
            break
        keep = wanted
    return shifts


def per_frame(centres: np.ndarray, shifts: np.ndarray, frames: int) -> np.ndarray:
    """(frames, 2) drift through the shifts at their centres: a cubic spline (two points: a
    line), continued as a straight line of its end slope before the first centre and after the
    last (a cubic's ends would swing)."""
    t = np.arange(frames, dtype=np.float64)
    if len(centres) == 2:
        slope = (shifts[1] - shifts[0]) / (centres[1] - centres[0])
        return shifts[0] + slope * (t[:, None] - centres[0])
    spline = CubicSpline(centres, shifts)
    inside = np.clip(t, centres[0], centres[-1])
    return spline(inside) + spline(inside, 1) * (t - inside)[:, None]


def fiducial_drift(table: Localizations, radius: float = 1.0) -> Drift:
    """The drift as the mean track of the table's fiducials: spots linked from frame to frame
    within `radius` px of where they were last seen (gaps of any length) that are present in more than FIDUCIAL_SHARE of the
    frames. Each fiducial's track less its median position, averaged over the fiducials seen in
    a frame (inverse-variance weighted where the table gives uncertainties); frames where none
    is seen are interpolated."""
    from pixelreg.post.merge import link_events

    check_table(table)
    x, y, frame = table["x"], table["y"], table["frame"]
    frames = int(frame.max()) + 1
    track = link_events(x, y, frame, np.ones(len(table)), radius, gap=frames, follow=True)
    seen = np.array([len(np.unique(frame[track == k])) for k in range(int(track.max()) + 1)])
    fiducials = np.flatnonzero(seen > FIDUCIAL_SHARE * frames)
    if not len(fiducials):
        raise PixelregError(
            f"the table holds no fiducial: no spot is present in more than "
            f"{FIDUCIAL_SHARE:.0%} of its {frames:,} frames; leave out --fiducials to correlate "
            "the localizations instead"
        )
    weights = table.inverse_variances()
    weight = np.ones(len(table)) if weights is None else weights
    sums = np.zeros((frames, 3))
    for k in fiducials:
        mine = track == k
        offset = np.column_stack([x[mine] - np.median(x[mine]), y[mine] - np.median(y[mine])])
        np.add.at(sums, frame[mine], np.column_stack([weight[mine], weight[mine, None] * offset]))
    have = sums[:, 0] > 0
    drift = np.column_stack(
        [np.interp(np.arange(frames), np.flatnonzero(have), sums[have, k] / sums[have, 0]) for k in (1, 2)]
    )
    drift -= drift[0]
    return Drift(drift[:, 0], drift[:, 1], 0, f"fiducials ({len(fiducials)})", np.zeros(0), np.zeros((0, 2)))
