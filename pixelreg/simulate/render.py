"""Rendering: the expected image of spots (integrated over pixels) and its noisy, exposed image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pixelreg.simulate.coords import pixel_of
from pixelreg.simulate.spec import DataSpec
from pixelreg.simulate.streams import random_stream

if TYPE_CHECKING:
    from pixelreg.simulate.psf import SampledPSF

# --- rendering -----------------------------------------------------------------------------


@dataclass
class Photometry:
    """What each spot and image of a batch was rendered with, where a spec lets it vary or
    counts photons: spots' photons (or grey levels) and sigmas (N, K), images' background (N,),
    and under a measured PSF the spots' depths z (N, K), nm."""

    photons: np.ndarray
    sigma: np.ndarray
    background: np.ndarray
    z: np.ndarray | None = None

    def __getitem__(self, index: Any) -> Photometry:
        z = None if self.z is None else self.z[index]
        return Photometry(self.photons[index], self.sigma[index], self.background[index], z)

    @staticmethod
    def concatenate(parts: list[Photometry]) -> Photometry:
        photons, sigma, background = (
            np.concatenate([getattr(p, name) for p in parts]) for name in PHOTOMETRY_ARRAYS
        )
        depths = [p.z for p in parts if p.z is not None]
        z = np.concatenate(depths) if len(depths) == len(parts) else None
        return Photometry(photons, sigma, background, z)


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
    z = None
    if spec.psf:
        z = np.full(shape, spec.z)
        if spec.z_max is not None:
            z = rng.uniform(spec.z, spec.z_max, size=shape)
    return Photometry(photons, sigma, background, z)


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
    psf = spec.sampled_psf
    if psf is not None:
        z = np.full((n, k), spec.z) if photometry.z is None else photometry.z
        add_sampled_spots(image, points, brightness, z, psf)
        return image
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


def add_sampled_spots(
    image: np.ndarray, points: np.ndarray, photons: np.ndarray, z: np.ndarray, psf: SampledPSF
) -> None:
    """Add to `image` (N, H, W) the spots at `points` (N, K, 2, NaN where none) with `photons`
    and depths `z` (N, K) nm through the sampled PSF: each pixel within its reach receives the PSF
    integrated over it."""
    import torch  # a spec that names a PSF has loaded it, and torch with it

    n, height, width = image.shape
    frame, spot = np.nonzero(np.isfinite(points[..., 0]) & (photons != 0))
    where = points[frame, spot]
    shares, _ = psf.window(torch.from_numpy(where), torch.from_numpy(z[frame, spot]), psf.radius)
    light = shares.numpy() * photons[frame, spot][:, None, None]
    steps = np.arange(-psf.radius, psf.radius + 1)
    centre = np.floor(where + 0.5).astype(np.int64)
    xs = centre[:, 0, None, None] + steps[None, None, :]
    ys = centre[:, 1, None, None] + steps[None, :, None]
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    flat = (frame[:, None, None] * height + ys) * width + xs
    image += np.bincount(flat[inside], weights=light[inside], minlength=image.size).reshape(image.shape)


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
