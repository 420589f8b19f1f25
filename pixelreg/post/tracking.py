"""Trajectories: localizations linked from frame to frame by trackpy's linker.

trackpy's `link` (Crocker and Grier's algorithm, with trackpy's subnetwork solver) is the
linker tracking users already trust; pixelreg hands it its own localizations rather than
trackpy.locate's. A localization joins the track whose last position lies within
`search_range` px in the next frame, or after up to `memory` frames in which the particle was
missed; where several could join several, the assignment of the least total squared
displacement wins. trackpy's linker has no place for a per-localization uncertainty, so none
is used.
"""

from __future__ import annotations

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations


def link_tracks(table: Localizations, search_range: float, memory: int = 0) -> Localizations:
    """`table` with its `track` column: each localization's trajectory, numbered from 0 in the
    order tracks begin."""
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
    # number the tracks in the order they begin (trackpy's numbers are its own)
    first = np.full(int(particle.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, particle, frame * len(table) + np.arange(len(table)))
    used = np.flatnonzero(first < np.iinfo(np.int64).max)
    rank = np.empty(len(first), np.int64)
    rank[used[np.argsort(first[used])]] = np.arange(len(used))
    locs = table.locs.copy()
    locs["track"] = rank[particle]
    return Localizations(table.path, locs, table.columns, table.given).with_columns("track")
