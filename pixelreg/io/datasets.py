"""Dataset files: a dataset written as .npz, and read back with every array checked."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file, write_atomic
from pixelreg.limits import require_memory
from pixelreg.simulate.coords import point_counts
from pixelreg.simulate.dataset import Dataset
from pixelreg.simulate.render import PHOTOMETRY_ARRAYS, Photometry, varies
from pixelreg.simulate.spec import MAX_SIZE, MIN_SIZE, SPLITS, DataSpec

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
                **photometry_arrays(dataset.photometry),  # type: ignore[arg-type]  # numpy's stub: arrays
            )

    return write_atomic(path, write)


def photometry_arrays(photometry: Photometry | None) -> dict[str, np.ndarray]:
    """The arrays a dataset file holds for its photometry: none, or float32 photons and sigma
    (N, K) and background (N,), and the spots' depths `z` (N, K) nm where they have any."""
    if photometry is None:
        return {}
    arrays = {name: getattr(photometry, name).astype(np.float32) for name in PHOTOMETRY_ARRAYS}
    if photometry.z is not None:
        arrays["z"] = photometry.z.astype(np.float32)
    return arrays


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
    arrays = _read_archive(path)
    missing = [key for key in ("images", "points") if key not in arrays]
    if missing:
        raise PixelregError(f"{path} lacks the array(s) {', '.join(missing)}; expected images, points, split")
    images, points = arrays["images"], arrays["points"]
    _check_images(path, images)
    n, height, width = images.shape
    _check_points(path, points, n, "count" in arrays)
    _check_counts(path, points, arrays.get("count"))
    _check_points_inside(path, points, height, width)
    split = _read_split(path, arrays, n)
    spec = _read_spec(path, arrays)
    _check_against_spec(path, spec, images, points)
    photometry = _read_photometry(path, arrays, n, points.shape[1])
    if spec is not None and varies(spec) and photometry is None:
        raise PixelregError(
            f"{path}: its spec varies the spots, but the file lacks their {', '.join(PHOTOMETRY_ARRAYS)}"
        )
    return Dataset(images, points.astype(np.float32), split.astype("<U5"), spec, photometry)


def dataset_header(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """What a dataset .npz declares, its arrays' shapes and dtypes (`npz_array_sizes`), read from
    the headers alone and checked for images of a kind a model reads: to refuse a file before
    anything is loaded."""
    path = require_file(path, "dataset")
    with _archive_errors(path):
        sizes = npz_array_sizes(path)
    if "images" not in sizes:
        raise PixelregError(f"{path} lacks the array images; expected images, points, split")
    shape, dtype = sizes["images"]
    if dtype not in (np.uint8, np.uint16) or len(shape) != 3:
        raise PixelregError(f"{path}: images must be uint8 or uint16 of shape (N, H, W), got {dtype} {shape}")
    return sizes


@contextmanager
def _archive_errors(path: Path) -> Iterator[None]:
    """A damaged archive as one PixelregError, whatever library failed to read it."""
    try:
        yield
    except PixelregError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises zlib, zip, numpy and OS errors alike
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PixelregError(
            f"{path} is not a readable .npz dataset ({reason}); make one with `pixelreg generate`"
        ) from exc


def _read_archive(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, after checking that the memory its headers declare is
    there."""
    with _archive_errors(path):
        sizes = npz_array_sizes(path)
        declared = sum(math.prod(shape) * dtype.itemsize for shape, dtype in sizes.values())
        require_memory(declared, f"{path} (as its arrays declare)", "use a smaller dataset")
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    raise AssertionError("unreachable")  # for the type checker: the block returns or raises


def _check_images(path: Path, images: np.ndarray) -> None:
    """Raise unless `images` are a non-empty uint8 or uint16 stack (N, H, W) of a size a model
    can take, so that every later check may rely on their shape."""
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


def _check_points(path: Path, points: np.ndarray, n: int, has_count: bool) -> None:
    """Raise unless `points` are floats (n, K, 2), K >= 1, whose NaN (allowed only beside a `count`
    array) blank whole points and which hold no infinity."""
    if points.dtype.kind != "f" or points.ndim != 3 or points.shape[0] != n or points.shape[2] != 2:
        raise PixelregError(
            f"{path}: points must be float of shape ({n}, K, 2), got {points.dtype} {points.shape}"
        )
    if points.shape[1] == 0:
        raise PixelregError(f"{path}: points has no point per image (shape {points.shape})")
    if np.isnan(points).any() and not has_count:
        raise PixelregError(
            f"{path}: points contain NaN; NaN may only pad a variable count, beside a `count` array"
        )
    if np.isinf(points).any() or (np.isnan(points[..., 0]) != np.isnan(points[..., 1])).any():
        raise PixelregError(f"{path}: points contain infinity, or NaN in one coordinate only")


def _check_counts(path: Path, points: np.ndarray, stored: np.ndarray | None) -> None:
    """Raise unless each image's NaN rows of `points` come after its last point, and the stored
    `count` array, where there is one, agrees with the points that are there."""
    counts = point_counts(points)
    if (np.isnan(points[..., 0]) != (np.arange(points.shape[1]) >= counts[:, None])).any():
        raise PixelregError(f"{path}: points may be NaN only as padding after each image's last point")
    if stored is not None and not np.array_equal(stored, counts):
        raise PixelregError(f"{path}: count disagrees with the points that are not NaN")


def _check_points_inside(path: Path, points: np.ndarray, height: int, width: int) -> None:
    """Raise if any point lies outside its height x width image (pixel centres at integers)."""
    outside = (points[..., 0] < -0.5) | (points[..., 0] > width - 0.5)
    outside |= (points[..., 1] < -0.5) | (points[..., 1] > height - 0.5)
    if outside.any():
        raise PixelregError(
            f"{path}: {int(outside.any(axis=1).sum())} image(s) have points outside the "
            f"{height}x{width} image"
        )


def _read_split(path: Path, arrays: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The split label of each of the n images: the stored one, checked, or "test" for all where
    the file has none."""
    split = arrays.get("split", np.full(n, "test"))
    if split.shape != (n,) or split.dtype.kind != "U" or not np.isin(split, SPLITS).all():
        raise PixelregError(f"{path}: split must be {n} labels among {', '.join(SPLITS)}")
    return split


def _read_spec(path: Path, arrays: dict[str, np.ndarray]) -> DataSpec | None:
    """The spec stored as JSON text in the file, validated; None where there is none (or the
    stored JSON is null)."""
    if "spec" not in arrays:
        return None
    stored = arrays["spec"]
    try:
        spec_dict = json.loads(str(stored)) if stored.dtype.kind == "U" and stored.ndim == 0 else ...
    except (ValueError, RecursionError):  # not JSON, too deep, or a number too long
        spec_dict = ...
    if spec_dict is ...:
        raise PixelregError(f"{path}: the stored spec is not valid JSON text")
    return DataSpec.from_dict(spec_dict, f"{path}: the stored spec") if spec_dict is not None else None


def _check_against_spec(path: Path, spec: DataSpec | None, images: np.ndarray, points: np.ndarray) -> None:
    """Raise unless the images and points are what the stored spec describes: its count of points,
    image size and image dtype (uint8 grey levels where there is no spec)."""
    _, height, width = images.shape
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


def _read_photometry(path: Path, arrays: dict[str, np.ndarray], n: int, most: int) -> Photometry | None:
    """The photometry stored in the file, as float64, checked to be finite floats of the shapes of
    n images of at most `most` points; None where the file lacks any of its arrays."""
    if not all(name in arrays for name in PHOTOMETRY_ARRAYS):
        return None
    for name in PHOTOMETRY_ARRAYS:
        if arrays[name].dtype.kind != "f":
            raise PixelregError(f"{path}: {name} must be floats, got {arrays[name].dtype}")
        if not np.isfinite(arrays[name]).all():
            raise PixelregError(f"{path}: {name} holds NaN or infinity")
    photometry = Photometry(*(arrays[name].astype(np.float64) for name in PHOTOMETRY_ARRAYS))
    shapes = ((n, most), (n, most), (n,))
    if [a.shape for a in (photometry.photons, photometry.sigma, photometry.background)] != list(shapes):
        raise PixelregError(f"{path}: photons and sigma must be ({n}, {most}), background ({n},)")
    if "z" in arrays:
        z = arrays["z"]
        if z.dtype.kind != "f" or z.shape != (n, most) or not np.isfinite(z).all():
            raise PixelregError(f"{path}: z must be finite floats of shape ({n}, {most})")
        photometry.z = z.astype(np.float64)
    return photometry
