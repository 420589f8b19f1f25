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


def daofind_available() -> bool:
    """Whether photutils (DAOStarFinder) is installed."""
    try:
        import photutils.detection  # noqa: F401
    except ImportError:
        return False
    return True


def daofind_detections(frames: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """photutils' DAOStarFinder on each frame less its median, a threshold of 3 robust noise
    sigmas so that the caller thresholds its `peak`; its FWHM from the PSF's sigma."""
    import photutils
    from photutils.detection import DAOStarFinder

    photutils.future_column_names = True  # x_centroid, y_centroid (photutils 3)

    found: list[np.ndarray] = []
    for frame in frames.astype(np.float64):
        level = np.median(frame)
        noise = 1.4826 * np.median(np.abs(frame - level))
        table = DAOStarFinder(threshold=3 * noise, fwhm=2.3548 * sigma)(frame - level)
        if table is None or len(table) == 0:
            found.append(np.zeros((0, 3)))
            continue
        found.append(np.stack([table["x_centroid"], table["y_centroid"], table["peak"]], 1))
    most = max(1, max(len(f) for f in found))
    points = np.full((len(frames), most, 2), np.nan)
    scores = np.full((len(frames), most), -np.inf)
    for i, table in enumerate(found):
        points[i, : len(table)], scores[i, : len(table)] = table[:, :2], table[:, 2]
    return points, scores
