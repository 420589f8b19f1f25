"""Other tools' localizers, where installed (the `compare` extra): trackpy.locate and photutils' DAOStarFinder."""

from __future__ import annotations

import math

import numpy as np

from pixelreg.simulate.spec import DataSpec


def trackpy_available() -> bool:
    """Whether the optional comparison trackpy is installed (`pip install pixelreg[compare]`)."""
    try:
        import trackpy  # noqa: F401
    except ImportError:
        return False
    return True


def trackpy_detections(
    images: np.ndarray, spec: DataSpec, minmass: float = 0.0, processes: int | str = 1, engine: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """trackpy.locate on each image, its `minmass` 0 by default so that the caller thresholds the
    mass it reports as any other score; its diameter the odd width that holds the spot."""
    import trackpy

    trackpy.quiet()
    diameter = 2 * max(1, math.ceil(2 * spec.blur)) + 1
    table = trackpy.batch(
        list(images), diameter, minmass=max(0.0, minmass), processes=processes, engine=engine
    )
    if table.empty:  # nothing found anywhere
        return np.full((len(images), 1, 2), np.nan, dtype=np.float32), np.full((len(images), 1), -np.inf)
    frames = table["frame"].to_numpy()
    counts = np.bincount(frames, minlength=len(images))
    most = max(1, int(counts.max()) if counts.size else 1)
    points = np.full((len(images), most, 2), np.nan, dtype=np.float32)
    scores = np.full((len(images), most), -np.inf)
    order = np.lexsort((-table["mass"].to_numpy(), frames))
    frames = frames[order]
    rank = np.arange(len(frames)) - np.searchsorted(frames, frames)  # place within its frame
    points[frames, rank] = table[["x", "y"]].to_numpy()[order]
    scores[frames, rank] = table["mass"].to_numpy()[order]
    return points, scores
