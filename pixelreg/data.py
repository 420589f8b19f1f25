"""Synthetic images of bright points: coordinates, rendering, dataset specs, splits, npz I/O.

Conventions (shared by every module):
- `x` is the column, `y` the row; pixel centres lie on integer coordinates, so the image
  spans [-0.5, W - 0.5] and pixel (0, 0) is the point (0.0, 0.0).
- Points have shape (N, K, 2) in the order (x, y), in pixel units, float32.
- Images on disk are uint8 (N, H, W); models see float32 (N, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .camera import Camera
from .errors import PixelregError
from .files import require_file, write_atomic
from .limits import require_memory
from .schema import check_value, fields_from

SPLITS = ("train", "val", "test")
HOLDOUTS = ("random", "quadrant", "none")
MIN_SIZE, MAX_SIZE = 8, 512
SEED_MAX = 2**32 - 1  # seeds are one 32-bit word of every random stream's key
MOST_PHOTONS = 1e8  # photons per spot or per pixel: a million times what a camera pixel holds
MIN_CAMERA_BLUR = 0.3  # px: the camera model's spots are Gaussians at least this wide
RENDER_CHUNK_PIXELS = 2**24  # pixels rendered at once: 128 MiB of float64 per buffer


# --- the one place where pixel and normalised coordinates meet ---------------------------


def to_normalized(points: Any, height: int, width: int) -> Any:
    """Pixel (x, y) -> normalised (u, v) = (x / (W - 1), y / (H - 1)); numpy or torch."""
    return points / _scale_like(points, height, width)


def from_normalized(uv: Any, height: int, width: int) -> Any:
    """Normalised (u, v) -> pixel (x, y); the inverse of `to_normalized`."""
    return uv * _scale_like(uv, height, width)


def _scale_like(array: Any, height: int, width: int) -> Any:
    if hasattr(array, "new_tensor"):  # a torch tensor (this module never imports torch itself)
        return array.new_tensor([width - 1, height - 1])
    return np.asarray([width - 1, height - 1], dtype=np.asarray(array).dtype)


# --- the one place where random streams are keyed -----------------------------------------

STREAMS = {"positions": 0, "noise": 1, "batch order": 2, "every position": 3}


def random_stream(seed: int, purpose: str, split: str | None = None, epoch: int = 0, step: int = 0):
    """The generator for one purpose, keyed by (seed, purpose, split, epoch, step).

    Streams of different keys are independent, and the same key always gives the same
    stream: the noise of a split is the same whether `generate` renders it to a file or
    `train` renders it in memory, and a resumed run draws what an uninterrupted one drew.
    A dataset's own rendering uses epoch 0; training epochs count from 1. Trailing zero
    keys are dropped, so the positions stream is the seed's own `default_rng(seed)`.
    """
    key = [seed, STREAMS[purpose], 0 if split is None else 1 + SPLITS.index(split), epoch, step]
    while len(key) > 1 and key[-1] == 0:
        key.pop()
    return np.random.default_rng(key)


# --- how a dataset is made -----------------------------------------------------------------


def _option(default: Any, help: str, **limits: int) -> Any:
    """A DataSpec field whose help text (and `min`/`max`, if any) its command-line option shows."""
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines a synthetic dataset; the same spec gives the same bytes.

    Each field is also an option of `generate` and `train` (`min_distance` is
    `--min-distance`; `height` and `width` are `--size`), with the help written here.
    """

    n: int = _option(10_000, "Number of images.")
    height: int = _option(50, "Rows of each image.")
    width: int = _option(50, "Columns of each image.")
    seed: int = _option(0, "Seed for every random choice.", min=0, max=SEED_MAX)
    val_fraction: float = _option(0.1, "Share of images in the validation split, in [0, 1).")
    test_fraction: float = _option(0.1, "Share of images in the test split, in [0, 1).")
    holdout: str = _option(
        "auto",
        "Which positions train never sees: random (val/test positions disjoint from train), "
        "quadrant (train never sees the bottom-right quadrant), none (independent images); "
        "auto: random, but none for --points LO:HI, whose images never repeat and whose spots "
        "the other two would crowd onto a tenth or a quarter of the pixels.",
    )
    points: int = _option(
        1, "Bright points per image: K, or LO:HI for a count drawn per image from LO to HI (0 allowed)."
    )
    points_max: int | None = _option(None, "The HI of --points LO:HI; None: exactly --points per image.")
    min_distance: float = _option(0.0, "Minimum distance between points of one image, pixels.")
    blur: float = _option(
        0.0, "Gaussian point-spread sigma in pixels (0: one pixel); LO:HI draws each spot's, uniformly."
    )
    blur_max: float | None = _option(None, "The HI of --blur LO:HI; None: every spot the same.")
    subpixel: bool = _option(False, "Continuous positions, spot integrated over pixels.")
    noise: float = _option(0.0, "Additive Gaussian noise sigma, grey levels (then clipped to 0..255).")
    brightness: float = _option(255.0, "Total intensity of a spot: grey levels summed over its pixels.")
    background: float = _option(0.0, "Constant grey level under the spots.")
    photons: float = _option(
        0.0,
        "Detected photons per spot; LO:HI draws each spot's, log-uniformly. Above 0 images are "
        "made by the camera model instead (16-bit ADU, sub-pixel spots), and --noise, --brightness "
        "and --background do not apply.",
    )
    photons_max: float | None = _option(None, "The HI of --photons LO:HI.")
    background_photons: float = _option(
        0.0, "Camera model: background photons per pixel; LO:HI draws each image's, uniformly."
    )
    background_photons_max: float | None = _option(None, "The HI of --background-photons LO:HI.")
    qe: float = _option(1.0, "Camera model: quantum efficiency, photoelectrons per photon, in (0, 1].")
    em_gain: float = _option(0.0, "Camera model: EM gain (0 or 1: no EM register, as sCMOS and CCD).")
    read_noise: float = _option(0.0, "Camera model: read noise, electrons rms.")
    e_per_adu: float = _option(1.0, "Camera model: photoelectrons per A/D count.")
    baseline: float = _option(0.0, "Camera model: the offset a dark pixel reads, ADU.")

    def __post_init__(self) -> None:
        if self.holdout == "auto":  # resolved here, so that every stored spec says what it did
            object.__setattr__(self, "holdout", "none" if self.points_max is not None else "random")
        if self.photons > 0:  # photons arrive anywhere: the camera model's spots are sub-pixel
            object.__setattr__(self, "subpixel", True)
        self.validate()

    def validate(self) -> None:
        """Raise PixelregError naming the first impossible setting."""
        for spec_field in fields(self):
            flag = "--" + spec_field.name.replace("_", "-")
            check_value(getattr(self, spec_field.name), str(spec_field.type), flag)
        if not 0 <= self.seed <= SEED_MAX:
            raise PixelregError(f"--seed must be 0 to {SEED_MAX}, got {self.seed}")
        if self.n < 1:
            raise PixelregError(f"--n must be at least 1, got {self.n}")
        for name, value in (("height", self.height), ("width", self.width)):
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise PixelregError(f"image {name} must be {MIN_SIZE} to {MAX_SIZE}, got {value}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0) or math.isnan(value):
                flag = "--" + name.replace("_", "-")
                raise PixelregError(f"{flag} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise PixelregError(
                "--val-fraction plus --test-fraction must be below 1 so that some images train, "
                f"got {self.val_fraction + self.test_fraction:g}"
            )
        if self.holdout not in HOLDOUTS:
            raise PixelregError(f"--holdout must be one of {', '.join(HOLDOUTS)}, got {self.holdout!r}")
        if self.points_max is None and self.points < 1:
            raise PixelregError(f"--points must be at least 1, got {self.points}")
        if self.points_max is not None:
            if self.points < 0 or self.points_max < 1:
                raise PixelregError(
                    f"--points {self.points}:{self.points_max}: a count range needs 0 <= LO and 1 <= HI"
                )
            if self.points > self.points_max:
                raise PixelregError(
                    f"--points {self.points}:{self.points_max} is out of order; give LO:HI with LO <= HI"
                )
        for name in ("min_distance", "blur", "noise", "background"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise PixelregError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if not (self.brightness > 0.0 and math.isfinite(self.brightness)):
            raise PixelregError(f"--brightness must be a finite number > 0, got {self.brightness}")
        most = {
            "blur": float(max(self.height, self.width)),
            "photons": MOST_PHOTONS,
            "background_photons": MOST_PHOTONS,
        }
        for name, limit in most.items():
            low, high, flag = getattr(self, name), getattr(self, f"{name}_max"), "--" + name.replace("_", "-")
            for value in (low, high):
                if value is not None and not 0.0 <= value <= limit:
                    raise PixelregError(f"{flag} must be 0 to {limit:g}, got {value:g}")
            if high is not None and high < low:
                raise PixelregError(f"{flag} {low:g}:{high:g} is out of order; give LO:HI with LO <= HI")
        if self.photons_max is not None and self.photons == 0:
            raise PixelregError("--photons LO:HI draws log-uniformly, so LO must be above 0")
        if 0 < self.photons < 1:
            raise PixelregError(f"--photons must be 0 (grey levels) or at least 1, got {self.photons:g}")
        self.camera.validate()  # its settings are checked even while the grey-level model is used
        if self.camera_model:
            if self.blur < MIN_CAMERA_BLUR:
                raise PixelregError(
                    f"the camera model renders spots of --blur {MIN_CAMERA_BLUR:g} px or more; got {self.blur:g}"
                )
        elif self.blur_max is not None and self.blur == 0:
            raise PixelregError("--blur LO:HI needs LO above 0")
        if self.min_distance > math.hypot(self.height, self.width):
            raise PixelregError(
                f"--min-distance {self.min_distance:g} is longer than the {self.height}x{self.width} "
                "image's diagonal; lower it"
            )
        room = self.height * self.width / max(1.0, math.pi * self.min_distance**2 / 4)
        if self.most_points > room / 4:
            raise PixelregError(
                f"{self.most_points} points with --min-distance {self.min_distance:g} do not fit in a "
                f"{self.height}x{self.width} image; lower one of them"
            )

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def camera_model(self) -> bool:
        """Whether images are photon counts through a camera (uint16 ADU), not grey levels."""
        return self.photons > 0

    @property
    def mean_blur(self) -> float:
        """The middle of the spots' sigmas: --blur, or the middle of its range."""
        return (self.blur + (self.blur_max or self.blur)) / 2

    @property
    def camera(self) -> Camera:
        """The detector of the camera model (its defaults for grey-level specs)."""
        return Camera.from_values(asdict(self))

    @property
    def image_dtype(self) -> type:
        return np.uint16 if self.camera_model else np.uint8

    @property
    def variable_count(self) -> bool:
        """Whether each image draws its own number of points (--points LO:HI)."""
        return self.points_max is not None

    @property
    def most_points(self) -> int:
        """The most points an image holds: the K of the (N, K, 2) points array."""
        return self.points if self.points_max is None else self.points_max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "the dataset spec") -> DataSpec:
        """The spec stored in a file, each field checked; errors name `where`."""
        values = fields_from(cls, data, where)
        try:
            return cls(**values)
        except PixelregError as exc:
            raise PixelregError(f"{where}: {exc}") from None

    def with_(self, **changes: Any) -> DataSpec:
        return replace(self, **changes)


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


def point_counts(points: np.ndarray) -> np.ndarray:
    """(N,) int: the points of each image in an (N, K, 2) array padded with NaN."""
    return np.isfinite(points[..., 0]).sum(1)


def present_points(points: np.ndarray) -> np.ndarray:
    """(M, 2): every point of an (N, K, 2) array, the NaN padding left out."""
    flat = np.asarray(points).reshape(-1, 2)
    return flat[np.isfinite(flat[:, 0])]


def position_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool marking the pixels that the given points fall in."""
    mask = np.zeros((height, width), dtype=bool)
    cells = pixel_of(present_points(points))
    mask[np.clip(cells[:, 1], 0, height - 1), np.clip(cells[:, 0], 0, width - 1)] = True
    return mask


def pixel_of(points: np.ndarray) -> np.ndarray:
    """The integer (x, y) of the pixel each point falls in (round half away from zero)."""
    return np.floor(np.asarray(points, dtype=np.float64) + 0.5).astype(np.int64)


def parse_count(text: str) -> tuple[int, int | None]:
    """'3' -> (3, None): exactly 3 points; '0:10' -> (0, 10): 0 to 10 per image; '4:4' -> (4, None)."""
    return _value_or_range(text, int, "--points must be K or LO:HI (whole numbers)")


def parse_range(text: str, flag: str) -> tuple[float, float | None]:
    """'1.5' -> (1.5, None): every spot the same; '0.9:1.3' -> (0.9, 1.3): drawn per spot or image."""
    return _value_or_range(text, float, f"{flag} must be a number or a range LO:HI")


def _value_or_range(text: str, kind: type, wanted: str) -> tuple[Any, Any]:
    """(value, None) from 'V', (LO, HI) from 'LO:HI' (LO:LO is a value); else `wanted`, as an error."""
    try:
        numbers = [kind(part) for part in text.split(":")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        return numbers[0], None
    if len(numbers) == 2:
        low, high = numbers
        return (low, None) if low == high else (low, high)
    raise PixelregError(f"{wanted}, got {text!r}")


# --- positions and splits ------------------------------------------------------------------


def split_positions(spec: DataSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Flat pixel indices (y * W + x) each split may draw from.

    `random` and `quadrant` keep train, val and test positions disjoint, so that evaluation
    measures positions the model never saw; `none` lets every split use every position.
    """
    height, width = spec.size
    every = np.arange(height * width)
    if spec.holdout == "none":
        return {"train": every, "val": every, "test": every}
    if spec.holdout == "random":
        held = rng.permutation(every)
        n_val = _share(spec.val_fraction, every.size)
        n_test = _share(spec.test_fraction, every.size)
    else:  # quadrant: train never sees the bottom-right quadrant
        ys, xs = np.divmod(every, width)
        in_quadrant = (xs >= width // 2) & (ys >= height // 2)
        quadrant = rng.permutation(every[in_quadrant])
        outside = every[~in_quadrant]
        total = spec.val_fraction + spec.test_fraction
        n_val = round(quadrant.size * spec.val_fraction / total) if total > 0 else 0
        n_test = quadrant.size - n_val if total > 0 else 0
        held = np.concatenate([quadrant, rng.permutation(outside)])
        if total == 0:
            return {"train": outside, "val": held[:0], "test": held[:0]}
    val, test = held[:n_val], held[n_val : n_val + n_test]
    train = np.sort(held[n_val + n_test :])
    return {"train": train, "val": np.sort(val), "test": np.sort(test)}


def _share(fraction: float, total: int) -> int:
    return max(1, round(fraction * total)) if fraction > 0 else 0


def split_counts(spec: DataSpec) -> dict[str, int]:
    """How many images each split gets."""
    n_val = round(spec.val_fraction * spec.n)
    n_test = round(spec.test_fraction * spec.n)
    return {"train": spec.n - n_val - n_test, "val": n_val, "test": n_test}


def sample_points(pool: np.ndarray, count: int, spec: DataSpec, rng: np.random.Generator) -> np.ndarray:
    """(count, K, 2) points whose pixels come from `pool`, at least `min_distance` apart.

    With a variable count each image draws its number of points uniformly from
    [points, points_max]; the rows past it are NaN.
    """
    k = spec.most_points
    points = _draw(pool, (count, k), spec, rng)
    absent = None
    if spec.variable_count:
        counts = rng.integers(spec.points, spec.most_points + 1, size=count)
        absent = np.arange(k)[None, :] >= counts[:, None]
        points[absent] = np.nan
    if k > 1 and spec.min_distance > 0:
        for _ in range(1000):
            bad = _too_close(points, spec.min_distance)
            if not bad.any():
                break
            points[bad] = _draw(pool, (int(bad.sum()), k), spec, rng)
            if absent is not None:
                points[absent] = np.nan
        else:
            raise PixelregError("could not place the points apart; lower --min-distance")
    return points


def _draw(pool: np.ndarray, shape: tuple[int, int], spec: DataSpec, rng: np.random.Generator):
    cells = rng.choice(pool, size=shape)
    ys, xs = np.divmod(cells, spec.width)
    points = np.stack([xs, ys], axis=-1).astype(np.float64)
    if spec.subpixel:  # uniform over the part of the pixel that lies within [0, size - 1]
        limit = np.array([spec.width - 1, spec.height - 1], dtype=np.float64)
        low, high = np.maximum(points - 0.5, 0.0), np.minimum(points + 0.5, limit)
        points = low + rng.uniform(size=points.shape) * (high - low)
    return points.astype(np.float32)


def _too_close(points: np.ndarray, min_distance: float) -> np.ndarray:
    diff = points[:, :, None, :] - points[:, None, :, :]
    dist = np.sqrt((diff**2).sum(-1))  # NaN (an absent point) is never too close
    k = points.shape[1]
    dist[:, np.arange(k), np.arange(k)] = np.inf
    return (dist < min_distance).any(axis=(1, 2))


# --- rendering -----------------------------------------------------------------------------


@dataclass
class Photometry:
    """What each spot and image of a batch was rendered with, where a spec lets it vary or
    counts photons: spots' photons (or grey levels) and sigmas (N, K), images' background (N,)."""

    photons: np.ndarray
    sigma: np.ndarray
    background: np.ndarray

    def __getitem__(self, index: Any) -> Photometry:
        return Photometry(self.photons[index], self.sigma[index], self.background[index])

    @staticmethod
    def concatenate(parts: list[Photometry]) -> Photometry:
        return Photometry(*(np.concatenate([getattr(p, name) for p in parts]) for name in PHOTOMETRY_ARRAYS))


PHOTOMETRY_ARRAYS = ("photons", "sigma", "background")


def varies(spec: DataSpec) -> bool:
    """Whether images need a Photometry: counted in photons, or with spots of different blur."""
    return spec.camera_model or spec.blur_max is not None


def draw_photometry(spec: DataSpec, shape: tuple[int, int], rng: np.random.Generator) -> Photometry:
    """The photometry of (N, K) spots: photons log-uniform and sigma uniform per spot, background
    uniform per image, each within its range (a value without one is used as it is)."""
    n, k = shape
    if spec.camera_model:
        photons = np.full(shape, spec.photons)
        if spec.photons_max is not None:
            photons = np.exp(rng.uniform(math.log(spec.photons), math.log(spec.photons_max), size=shape))
        background = np.full(n, spec.background_photons)
        if spec.background_photons_max is not None:
            background = rng.uniform(spec.background_photons, spec.background_photons_max, size=n)
    else:
        photons, background = np.full(shape, spec.brightness), np.full(n, spec.background)
    sigma = np.full(shape, spec.blur)
    if spec.blur_max is not None:
        sigma = rng.uniform(spec.blur, spec.blur_max, size=shape)
    return Photometry(photons, sigma, background)


def expected_image(points: np.ndarray, spec: DataSpec, photometry: Photometry | None = None) -> np.ndarray:
    """Noise-free (N, H, W) float64 image: background plus each spot integrated over pixels, in
    grey levels, or in photons under the camera model.

    With blur 0 a spot puts all its brightness into the pixel it falls in; with blur > 0 each
    pixel receives the integral of a Gaussian point spread over its area, so the total
    intensity and centroid of a spot are exact, not sampled at pixel centres. `photometry`
    gives each spot its own brightness and blur and each image its background; without it,
    the spec's constants.
    """
    points = np.asarray(points, dtype=np.float64)
    n, k, _ = points.shape
    height, width = spec.size
    if photometry is None:
        photometry = Photometry(
            np.full((n, k), spec.brightness), np.full((n, k), spec.blur), np.full(n, spec.background)
        )
    image = np.empty((n, height, width), dtype=np.float64)
    image[:] = photometry.background[:, None, None]
    present = np.isfinite(points[..., 0])  # (N, K): False where a variable count pads
    brightness = np.where(present, photometry.photons, 0.0)
    if spec.blur == 0 and spec.blur_max is None:
        cells = pixel_of(np.where(present[..., None], points, 0.0))
        rows = np.repeat(np.arange(n), k)
        np.add.at(image, (rows, cells[..., 1].ravel(), cells[..., 0].ravel()), brightness.ravel())
        return image
    reach = math.ceil(SPOT_REACH_SIGMAS * float(np.max(photometry.sigma, initial=0.0))) + 1
    local = 2 * reach + 1 < max(height, width)  # a spot's window is smaller than the image
    rows = np.arange(n)[:, None, None]
    for j in range(k):  # each term is vectorised over images and pixels
        if not present[:, j].any():
            continue
        centres = np.where(present[:, j, None], points[:, j], 0.0)
        if not local:
            wx = _pixel_integrals(centres[:, 0], width, photometry.sigma[:, j])  # (N, W)
            wy = _pixel_integrals(centres[:, 1], height, photometry.sigma[:, j])  # (N, H)
            image += brightness[:, j, None, None] * wy[:, :, None] * wx[:, None, :]
            continue
        # large images: each spot adds to the pixels within `reach` of its own only
        start = np.floor(centres + 0.5).astype(np.int64) - reach  # (N, 2)
        wx = _pixel_integrals(centres[:, 0] - start[:, 0], 2 * reach + 1, photometry.sigma[:, j])
        wy = _pixel_integrals(centres[:, 1] - start[:, 1], 2 * reach + 1, photometry.sigma[:, j])
        xs = start[:, 0, None, None] + np.arange(2 * reach + 1)[None, None, :]
        ys = start[:, 1, None, None] + np.arange(2 * reach + 1)[None, :, None]
        patch = brightness[:, j, None, None] * wy[:, :, None] * wx[:, None, :]
        inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height) & (patch != 0)
        where = np.broadcast_arrays(rows, ys, xs)
        np.add.at(image, tuple(axis[inside] for axis in where), patch[inside])
    return image


SPOT_REACH_SIGMAS = 6.0  # a spot's light beyond this many sigmas (a billionth of it) is left out
_erf = np.frompyfunc(math.erf, 1, 1)  # exact to the last bit, and numpy has no erf of its own


def _pixel_integrals(centres: np.ndarray, length: int, sigma: np.ndarray | float) -> np.ndarray:
    """Share of a 1-D Gaussian(centre, sigma) falling in each pixel [i - 0.5, i + 0.5]."""
    edges = np.arange(length + 1, dtype=np.float64) - 0.5  # pixel i spans edges[i]..edges[i+1]
    scale = np.asarray(sigma, dtype=np.float64).reshape(-1, 1) * math.sqrt(2.0)
    z = (edges[None, :] - centres[:, None]) / scale
    cdf = 0.5 * (1.0 + _erf(z).astype(np.float64))
    return np.diff(cdf, axis=1)


def render(points: np.ndarray, spec: DataSpec, rng: np.random.Generator | None = None) -> np.ndarray:
    """(N, H, W) images of `points` under `spec` (uint8, or uint16 ADU under the camera model),
    noise drawn from `rng`."""
    return render_with_truth(points, spec, rng)[0]


def render_with_truth(
    points: np.ndarray, spec: DataSpec, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, Photometry | None]:
    """`render`, and the photometry it drew from `rng` first (None where the spec fixes it)."""
    if (
        spec.blur == 0
        and spec.noise == 0
        and spec.most_points == 1
        and not spec.variable_count
        and not varies(spec)
    ):
        n, height, width = len(points), spec.height, spec.width
        images = np.full((n, height, width), min(255, round(spec.background)), dtype=np.uint8)
        cells = pixel_of(points)[:, 0]  # the clean task, fast
        images[np.arange(n), cells[:, 1], cells[:, 0]] = min(255, round(spec.background + spec.brightness))
        return images, None
    photometry = None
    if varies(spec):
        if rng is None:
            raise ValueError("a spec of varying or counted spots needs an rng")
        photometry = draw_photometry(spec, points.shape[:2], rng)
    image = expected_image(points, spec, photometry)
    if spec.camera_model:
        assert rng is not None
        return spec.camera.expose(image, rng), photometry
    if spec.noise > 0:
        if rng is None:
            raise ValueError("a noisy spec needs an rng")
        image += rng.normal(0.0, spec.noise, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), photometry


def every_position(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """One image per pixel position (row-major), rendered as `spec` says: (images, points)."""
    ys, xs = np.divmod(np.arange(spec.height * spec.width), spec.width)
    points = np.stack([xs, ys], axis=-1).astype(np.float32)[:, None, :]
    grid_spec = spec.with_(points=1, points_max=None, subpixel=False)
    return render(points, grid_spec, random_stream(spec.seed, "every position")), points


def make_points(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """The true points (N, K, 2) and split labels (N,) of the dataset `spec` describes."""
    rng = random_stream(spec.seed, "positions")
    pools = split_positions(spec, rng)
    counts = split_counts(spec)
    parts, labels = [], []
    for name in SPLITS:
        if counts[name] == 0:
            continue
        if pools[name].size == 0:
            raise PixelregError(
                f"the {name} split has {counts[name]} images but no positions to draw from; "
                "raise --val-fraction/--test-fraction or use a larger --size"
            )
        parts.append(sample_points(pools[name], counts[name], spec, rng))
        labels.append(np.full(counts[name], name))
    return np.concatenate(parts), np.concatenate(labels).astype("<U5")


def render_split(points: np.ndarray, spec: DataSpec, split: str) -> tuple[np.ndarray, Photometry | None]:
    """The images of one split, with that split's noise, and their photometry where it varies:
    any number, rendered chunk by chunk."""
    rng = random_stream(spec.seed, "noise", split)
    images = np.empty((len(points), spec.height, spec.width), dtype=spec.image_dtype)
    chunk = max(1, RENDER_CHUNK_PIXELS // (spec.height * spec.width))
    parts = []
    for start in range(0, len(points), chunk):
        images[start : start + chunk], photometry = render_with_truth(
            points[start : start + chunk], spec, rng
        )
        parts.append(photometry)
    return images, Photometry.concatenate(parts) if varies(spec) and parts else None


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
    images = np.empty((int(keep.sum()), spec.height, spec.width), dtype=spec.image_dtype)
    kept_labels = labels[keep]
    photometry = None
    if varies(spec):
        n, k = int(keep.sum()), spec.most_points
        photometry = Photometry(np.zeros((n, k)), np.zeros((n, k)), np.zeros(n))
    for name in splits:
        rows = kept_labels == name
        if rows.any():
            images[rows], drawn = render_split(points[keep][rows], spec, name)
            if photometry is not None and drawn is not None:
                for array in PHOTOMETRY_ARRAYS:
                    getattr(photometry, array)[rows] = getattr(drawn, array)
    return Dataset(images, points[keep], kept_labels, spec, photometry)


# --- files ---------------------------------------------------------------------------------


def save_dataset(path: str | Path, dataset: Dataset) -> Path:
    """Write `dataset` as a compressed .npz (atomically)."""
    spec_json = json.dumps(dataset.spec.to_dict() if dataset.spec else None)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                images=dataset.images,
                points=dataset.points,
                count=dataset.counts,  # the points of each image; NaN rows of `points` pad the rest
                split=dataset.split,
                spec=np.asarray(spec_json),
                **photometry_arrays(dataset.photometry),
            )

    return write_atomic(path, write)


def photometry_arrays(photometry: Photometry | None) -> dict[str, np.ndarray]:
    """The arrays a dataset file holds for its photometry: none, or float32 photons and sigma
    (N, K) and background (N,)."""
    if photometry is None:
        return {}
    return {name: getattr(photometry, name).astype(np.float32) for name in PHOTOMETRY_ARRAYS}


def npz_array_sizes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The shape and dtype each array of an .npz declares, read from its header alone."""
    sizes = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                    version, np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(handle)
            sizes[info.filename.removesuffix(".npy")] = (shape, dtype)
    return sizes


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a dataset .npz; every problem becomes one clear PixelregError."""
    path = require_file(path, "dataset")
    try:
        sizes = npz_array_sizes(path)
        declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in sizes.values())
        require_memory(declared, f"{path} (as its arrays declare)", "use a smaller dataset")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except PixelregError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises zlib, zip, numpy and OS errors alike
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PixelregError(
            f"{path} is not a readable .npz dataset ({reason}); make one with `pixelreg generate`"
        ) from exc
    missing = [key for key in ("images", "points") if key not in arrays]
    if missing:
        raise PixelregError(f"{path} lacks the array(s) {', '.join(missing)}; expected images, points, split")
    images, points = arrays["images"], arrays["points"]
    if images.dtype not in (np.uint8, np.uint16) or images.ndim != 3:
        raise PixelregError(
            f"{path}: images must be uint8 or uint16 of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    n, height, width = images.shape
    if n == 0:
        raise PixelregError(f"{path} holds no images")
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise PixelregError(
            f"{path}: images are {height}x{width}; each side must be {MIN_SIZE} to {MAX_SIZE}"
        )
    if points.dtype.kind != "f" or points.ndim != 3 or points.shape[0] != n or points.shape[2] != 2:
        raise PixelregError(
            f"{path}: points must be float of shape ({n}, K, 2), got {points.dtype} {points.shape}"
        )
    if points.shape[1] == 0:
        raise PixelregError(f"{path}: points has no point per image (shape {points.shape})")
    if np.isnan(points).any() and "count" not in arrays:
        raise PixelregError(
            f"{path}: points contain NaN; NaN may only pad a variable count, beside a `count` array"
        )
    if np.isinf(points).any() or (np.isnan(points[..., 0]) != np.isnan(points[..., 1])).any():
        raise PixelregError(f"{path}: points contain infinity, or NaN in one coordinate only")
    counts = point_counts(points)
    if (np.isnan(points[..., 0]) != (np.arange(points.shape[1]) >= counts[:, None])).any():
        raise PixelregError(f"{path}: points may be NaN only as padding after each image's last point")
    if "count" in arrays and not np.array_equal(arrays["count"], counts):
        raise PixelregError(f"{path}: count disagrees with the points that are not NaN")
    outside = (points[..., 0] < -0.5) | (points[..., 0] > width - 0.5)
    outside |= (points[..., 1] < -0.5) | (points[..., 1] > height - 0.5)
    if outside.any():
        raise PixelregError(
            f"{path}: {int(outside.any(axis=1).sum())} image(s) have points outside the "
            f"{height}x{width} image"
        )
    split = arrays.get("split", np.full(n, "test"))
    if split.shape != (n,) or split.dtype.kind != "U" or not np.isin(split, SPLITS).all():
        raise PixelregError(f"{path}: split must be {n} labels among {', '.join(SPLITS)}")
    spec = None
    if "spec" in arrays:
        stored = arrays["spec"]
        try:
            spec_dict = json.loads(str(stored)) if stored.dtype.kind == "U" and stored.ndim == 0 else ...
        except (ValueError, RecursionError):  # not JSON, too deep, or a number too long
            spec_dict = ...
        if spec_dict is ...:
            raise PixelregError(f"{path}: the stored spec is not valid JSON text")
        spec = DataSpec.from_dict(spec_dict, f"{path}: the stored spec") if spec_dict is not None else None
    if spec is not None and not spec.variable_count and np.isnan(points).any():
        raise PixelregError(
            f"{path}: the stored spec describes exactly {spec.points} point(s) per image, but "
            "some images have fewer (NaN rows)"
        )
    if spec is not None and (spec.size != (height, width) or spec.most_points != points.shape[1]):
        raise PixelregError(
            f"{path}: the stored spec describes {spec.most_points} point(s) in {spec.height}x{spec.width} "
            f"images, but the file holds {points.shape[1]} in {height}x{width}"
        )
    wanted = spec.image_dtype if spec is not None else np.uint8
    if images.dtype != wanted and spec is None:
        raise PixelregError(f"{path}: uint16 images need the stored spec of the camera model that made them")
    if images.dtype != wanted:
        raise PixelregError(
            f"{path}: images are {images.dtype}, but its spec describes {np.dtype(wanted).name} "
            f"({'ADU of the camera model' if wanted == np.uint16 else 'grey levels'})"
        )
    photometry = None
    if all(name in arrays for name in PHOTOMETRY_ARRAYS):
        for name in PHOTOMETRY_ARRAYS:
            if arrays[name].dtype.kind != "f":
                raise PixelregError(f"{path}: {name} must be floats, got {arrays[name].dtype}")
            if not np.isfinite(arrays[name]).all():
                raise PixelregError(f"{path}: {name} holds NaN or infinity")
        photometry = Photometry(*(arrays[name].astype(np.float64) for name in PHOTOMETRY_ARRAYS))
        shapes = (points.shape[:2], points.shape[:2], (n,))
        if [a.shape for a in (photometry.photons, photometry.sigma, photometry.background)] != list(shapes):
            raise PixelregError(
                f"{path}: photons and sigma must be ({n}, {points.shape[1]}), background ({n},)"
            )
    if spec is not None and varies(spec) and photometry is None:
        raise PixelregError(
            f"{path}: its spec varies the spots, but the file lacks their {', '.join(PHOTOMETRY_ARRAYS)}"
        )
    return Dataset(images, points.astype(np.float32), split.astype("<U5"), spec, photometry)
