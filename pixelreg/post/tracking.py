"""Trajectories: localizations linked from frame to frame by trackpy's linker.

trackpy's `link` (Crocker and Grier's algorithm, with trackpy's subnetwork solver) is the
linker tracking users already trust; pixelreg hands it its own localizations rather than
trackpy.locate's. A localization joins the track whose last position lies within
`search_range` px in the next frame, or after up to `memory` frames in which the particle was
missed; where several could join several, the assignment of the least total squared
displacement wins. trackpy's linker has no place for a per-localization uncertainty, so none
is used.

Where a slow particle meets a fast one and one of the two is missed (their spots merge), the
least-squares assignment hands the fast particle's localization to the slow track for a frame
or two; each such swap adds a step far larger than the slow track's own and biases its MSD.
So a track is then cut at every step improbable for its own motion: longer than `split` times
its RMS step, which for Brownian motion happens with chance exp(-split^2) per step (1.2e-4
at 3, for a long track). The RMS step is taken from the median squared step (the median of
an exponential is ln 2 times its mean), which a few swapped steps do not move; over a track's
first steps it is noisy, so a track of fewer than LEAST_STEPS steps is never cut, and one of
10 is cut with chance 1.7e-3 per Brownian step (simulated: 2.2e-4 at 100 steps).
"""

from __future__ import annotations

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations

SPLIT = 3.0  # a step over 3 RMS steps of its track is cut: chance exp(-9) per Brownian step
LEAST_STEPS = 10  # steps a track needs before its own RMS step is trusted to cut it


def link_tracks(
    table: Localizations, search_range: float, memory: int = 0, split: float = SPLIT
) -> tuple[Localizations, int]:
    """`table` with its `track` column (each localization's trajectory, numbered from 0 in the
    order tracks begin), and how many steps were cut as improbable (`split` times a track's RMS
    step; 0 cuts none)."""
    if not len(table):
        raise PixelregError("the table holds no localizations")
    frame = table["frame"]
    if frame.min() == frame.max():
        raise PixelregError("the table holds localizations of one frame only; tracks need frames")
    if not (np.isfinite(search_range) and search_range > 0):
        raise PixelregError(f"--search-range must be above 0 px, got {search_range:g}")
    extent = max(float(np.ptp(table["x"])), float(np.ptp(table["y"])), 1.0)
    if search_range > extent:
        raise PixelregError(
            f"--search-range {search_range:g} px is larger than the field the localizations cover "
            f"({extent:.0f} px): every particle could be any other"
        )
    if memory < 0:
        raise PixelregError(f"--memory must be 0 or more frames, got {memory}")
    if not (np.isfinite(split) and split >= 0):
        raise PixelregError(f"--split must be 0 (keep every link) or above, got {split:g}")
    import pandas as pd
    import trackpy

    trackpy.quiet()
    frames = pd.DataFrame({"frame": frame, "x": table["x"], "y": table["y"], "row": np.arange(len(table))})
    try:
        linked = trackpy.link(frames, search_range, memory=memory)
    except trackpy.linking.utils.SubnetOversizeException:
        raise PixelregError(
            f"too many particles could be linked to each other within --search-range {search_range:g} "
            "px (trackpy gives up on such a subnetwork); lower --search-range"
        ) from None
    particle = np.empty(len(table), np.int64)
    particle[linked["row"].to_numpy()] = linked["particle"].to_numpy()
    xy = np.column_stack([table["x"], table["y"]])
    track, cuts = split_tracks(particle, frame, xy, split) if split else (particle, 0)
    locs = table.locs.copy()
    locs["track"] = numbered(track, frame)
    return Localizations(table.path, locs, table.columns, table.given).with_columns("track"), cuts


def split_tracks(
    track: np.ndarray, frame: np.ndarray, xy: np.ndarray, split: float
) -> tuple[np.ndarray, int]:
    """Tracks cut at every step longer than `split` RMS steps of their own (see the module's
    docstring): new track numbers, and the number of steps cut. A step over a gap of g frames
    is weighed against g mean squared steps; tracks of fewer than LEAST_STEPS steps are kept."""
    order = np.lexsort((frame, track))
    track, frame, xy = track[order], frame[order], xy[order]
    same = track[1:] == track[:-1]
    square = ((xy[1:] - xy[:-1]) ** 2).sum(axis=1) / np.maximum(frame[1:] - frame[:-1], 1)
    step_track, step_square = track[:-1][same], square[same]
    ids, first, steps = np.unique(step_track, return_index=True, return_counts=True)
    by_size = np.lexsort((step_square, step_track))  # steps grouped by track, each group sorted
    middle = step_square[by_size][first + (steps - 1) // 2]
    middle = (middle + step_square[by_size][first + steps // 2]) / 2
    mean_square = middle / np.log(2)
    trusted = steps >= LEAST_STEPS
    where = np.searchsorted(ids, step_track)
    cut = np.zeros(len(same), bool)
    cut[same] = trusted[where] & (step_square > split**2 * mean_square[where])
    cut_track = np.concatenate([[0], np.cumsum(~same | cut)])
    out = np.empty(len(track), np.int64)
    out[order] = cut_track
    return out, int(cut.sum())


def numbered(track: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Track numbers from 0 in the order the tracks begin (the first localization's frame, then
    its row)."""
    first = np.full(int(track.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, track, frame * len(track) + np.arange(len(track)))
    used = np.flatnonzero(first < np.iinfo(np.int64).max)
    rank = np.empty(len(first), np.int64)
    rank[used[np.argsort(first[used])]] = np.arange(len(used))
    return rank[track]
