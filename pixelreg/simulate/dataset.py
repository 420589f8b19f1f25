"""A dataset in memory: images, true points and split labels, made from a spec."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelreg.limits import require_memory
from pixelreg.simulate.coords import point_counts, position_mask
from pixelreg.simulate.positions import make_points, split_counts
from pixelreg.simulate.render import PHOTOMETRY_ARRAYS, Photometry, render_with_truth, varies
from pixelreg.simulate.spec import SPLITS, DataSpec
from pixelreg.simulate.streams import random_stream

RENDER_CHUNK_PIXELS = 2**24  # pixels rendered at once: 128 MiB of float64 per buffer


@dataclass
class Dataset:
    """Images, their true points and a split label for each image."""

    images: np.ndarray  # (N, H, W) uint8 grey levels, or uint16 ADU under the camera model
    points: np.ndarray  # (N, K, 2) float32, pixel units (x, y); NaN rows pad a variable count
    split: np.ndarray  # (N,) str: train | val | test
    spec: DataSpec | None = None  # how it was made, when known
    photometry: Photometry | None = None  # each spot's photons and sigma, each image's background

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """(N,) int: how many points each image holds."""
        return point_counts(self.points)

    def select(self, split: str) -> np.ndarray:
        """Indices of the images in `split` ('all' for every image)."""
        if split == "all":
            return np.arange(len(self))
        return np.flatnonzero(self.split == split)

    def train_mask(self) -> np.ndarray:
        """(H, W) bool: the pixel positions that occur in the training split."""
        return position_mask(self.points[self.split == "train"], *self.size)


def render_split(points: np.ndarray, spec: DataSpec, split: str) -> tuple[np.ndarray, Photometry | None]:
    """The images of one split, with that split's noise, and their photometry where it varies:
    any number, rendered chunk by chunk."""
    rng = random_stream(spec.seed, "noise", split)
    images: np.ndarray = np.empty((len(points), spec.height, spec.width), dtype=spec.image_dtype)
    chunk = max(1, RENDER_CHUNK_PIXELS // (spec.height * spec.width))
    parts = []
    for start in range(0, len(points), chunk):
        images[start : start + chunk], photometry = render_with_truth(
            points[start : start + chunk], spec, rng
        )
        parts.append(photometry)
    drawn = [part for part in parts if part is not None]
    return images, Photometry.concatenate(drawn) if varies(spec) and drawn else None


def require_dataset_memory(spec: DataSpec, splits: tuple[str, ...] = SPLITS) -> None:
    """Refuse, before any work, a dataset whose points and images of `splits` cannot fit in memory."""
    pixels = spec.height * spec.width
    images = sum(split_counts(spec)[name] for name in splits) * pixels
    points = spec.n * (spec.most_points * 2 * (8 + 4 + 4) + 2 * 20)  # float64 draw, float32 copies, labels
    rendering = 3 * 8 * min(RENDER_CHUNK_PIXELS, spec.n * pixels)  # float64 image, noise, rounding
    require_memory(
        points + 2 * images + rendering,
        f"{spec.n:,} images of {spec.height}x{spec.width}",
        "lower --n or --size",
    )


def make_dataset(spec: DataSpec, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Build the dataset `spec` describes (only the images of `splits`); deterministic in the seed."""
    require_dataset_memory(spec, splits)
    points, labels = make_points(spec)
    keep = np.isin(labels, splits)
    images: np.ndarray = np.empty((int(keep.sum()), spec.height, spec.width), dtype=spec.image_dtype)
    kept_labels = labels[keep]
    photometry = None
    if varies(spec):
        n, k = int(keep.sum()), spec.most_points
        photometry = Photometry(
            np.zeros((n, k)), np.zeros((n, k)), np.zeros(n), np.zeros((n, k)) if spec.psf else None
        )
    for name in splits:
        rows = kept_labels == name
        if rows.any():
            images[rows], drawn = render_split(points[keep][rows], spec, name)
            if photometry is not None and drawn is not None:
                for array in (*PHOTOMETRY_ARRAYS, "z"):
                    if getattr(drawn, array) is not None:
                        getattr(photometry, array)[rows] = getattr(drawn, array)
    return Dataset(images, points[keep], kept_labels, spec, photometry)
