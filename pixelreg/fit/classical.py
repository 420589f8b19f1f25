"""Classical localizers, for honest comparison with the models.

- `argmax`: the K brightest local maxima (exact on a clean image);
- `centroid`: the background-subtracted, intensity-weighted mean in a window around each peak;
- `gaussian_fit`: least squares of the pixel-integrated Gaussian spot (position, brightness,
  background) around each peak: under Gaussian noise the maximum-likelihood estimator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pixelreg.fit.peers import trackpy_detections
from pixelreg.fit.photometry import photometry_start, poisson_fit
from pixelreg.fit.psf import integrated_gaussian, window_pixels, windows_around
from pixelreg.fit.solver import levenberg_marquardt
from pixelreg.simulate.spec import DataSpec


def peak_radius(spec: DataSpec) -> int:
    """Half-width of the window that holds most of one spot (the widest, when blur varies)."""
    return max(1, math.ceil(2.5 * (spec.blur_max or spec.blur)))


def find_peaks(images: np.ndarray, k: int, suppress: int = 1, smooth: float = 0.0) -> np.ndarray:
    """(N, K) flat indices of the K highest local maxima (non-maximum suppression).

    With `smooth` > 0 the images are first convolved with a Gaussian of that sigma, the
    matched filter for a blurred spot in white noise, so that one noisy pixel cannot win.
    """
    if k == 1 and smooth <= 0:  # plain numpy: the fastest classical answer there is
        return images.reshape(len(images), -1).argmax(1)[:, None]
    x = torch.from_numpy(images).float()[:, None]
    if smooth > 0:
        x = gaussian_smooth(x, smooth)
    if k == 1:
        return x.flatten(1).argmax(1, keepdim=True).numpy()
    x = tie_broken(x)  # ties between equal neighbours: a plateau gives one peak
    pooled = F.max_pool2d(x, 2 * suppress + 1, stride=1, padding=suppress)
    flat, pooled = x.flatten(1), pooled.flatten(1)
    score = torch.where(flat >= pooled, flat, torch.full_like(flat, -math.inf))
    return score.topk(k, dim=1).indices.numpy()


def gaussian_smooth(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, 1, H, W) images convolved with a normalised Gaussian."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    # pad with each image's median (its background), so edges are neither dark nor noisier
    level = images.flatten(1).median(1).values[:, None, None, None]
    images = F.pad(images - level, (radius, radius, radius, radius)) + level
    images = F.conv2d(images, taps.view(1, 1, 1, -1))
    return F.conv2d(images, taps.view(1, 1, -1, 1))


def argmax_points(images: np.ndarray, k: int = 1, suppress: int = 1) -> np.ndarray:
    """(N, K, 2): the pixel of each of the K highest local maxima."""
    peaks = find_peaks(images, k, suppress)
    ys, xs = np.divmod(peaks, images.shape[2])
    return np.stack([xs, ys], axis=-1).astype(np.float32)


def _windows(images: np.ndarray, peaks: np.ndarray, radius: int):
    """Pixel values and coordinates in a (2r+1)^2 window around each peak; outside: masked."""
    height, width = images.shape[1:]
    py, px = np.divmod(peaks, width)  # (N, K)
    xs, ys, inside = windows_around(np.stack([px, py], -1), height, width, radius)
    ys, xs = np.broadcast_arrays(ys, xs)
    values = window_pixels(images, xs, ys).astype(np.float64)
    return values, xs, ys, inside


def centroid_points(images: np.ndarray, k: int, spec: DataSpec) -> np.ndarray:
    """(N, K, 2): background-subtracted intensity centroid around each of the K highest peaks."""
    return centroid_at(images, find_peaks(images, k, max(1, peak_radius(spec) // 2), smooth=spec.blur), spec)


def centroid_at(images: np.ndarray, peaks: np.ndarray, spec: DataSpec) -> np.ndarray:
    """(N, K, 2): background-subtracted intensity centroid around each peak (flat index) given."""
    radius = peak_radius(spec)
    values, xs, ys, inside = _windows(images, peaks, radius)
    background = np.median(images.reshape(len(images), -1), axis=1)[:, None, None, None]
    weights = np.where(inside, np.clip(values - background, 0, None), 0.0)
    total = weights.sum((-2, -1))
    safe = np.where(total > 0, total, 1.0)
    centre_x, centre_y = (xs * weights).sum((-2, -1)) / safe, (ys * weights).sum((-2, -1)) / safe
    py, px = np.divmod(peaks, images.shape[2])
    centre_x = np.where(total > 0, centre_x, px)
    centre_y = np.where(total > 0, centre_y, py)
    return np.stack([centre_x, centre_y], axis=-1).astype(np.float32)


def gaussian_fit_points(images: np.ndarray, k: int, spec: DataSpec, iterations: int = 20) -> np.ndarray:
    """(N, K, 2): Levenberg-Marquardt fit of position, brightness and background per spot."""
    peaks = find_peaks(images, k, max(1, peak_radius(spec) // 2), smooth=spec.blur)
    return gaussian_fit_at(images, peaks, spec, iterations)


def gaussian_fit_at(
    images: np.ndarray, peaks: np.ndarray, spec: DataSpec, iterations: int = 20
) -> np.ndarray:
    """(N, K, 2): the fit of `gaussian_fit_points` around each peak (flat index) given, started
    from its centroid."""
    sigma = max(spec.blur, 0.3)
    radius = peak_radius(spec) + 1
    start = centroid_at(images, peaks, spec)
    values, xs, ys, inside = _windows(images, peaks, radius)
    v, gx, gy, mask = (torch.from_numpy(a) for a in (values, xs, ys, inside.astype(np.float64)))
    x0 = torch.from_numpy(start[..., 0].astype(np.float64))[..., None, None]
    y0 = torch.from_numpy(start[..., 1].astype(np.float64))[..., None, None]
    background = torch.from_numpy(np.median(images.reshape(len(images), -1), axis=1).astype(np.float64))
    b = background[:, None, None, None].expand_as(x0).clone()
    brightness = ((v - b) * mask).clamp(min=0).sum((-2, -1), keepdim=True).clamp(min=1.0)
    start_params = torch.cat([x0, y0, brightness, b], -1)[..., 0, :]  # (N, K, 4)

    def residuals(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, light, level = (p[..., i, None, None] for i in range(4))
        sx, dsx, _ = integrated_gaussian(x, gx, sigma)
        sy, dsy, _ = integrated_gaussian(y, gy, sigma)
        model = level + light * sx * sy
        jac = torch.stack([light * dsx * sy, light * sx * dsy, sx * sy, torch.ones_like(sx)], -1)
        return ((v - model) * mask).flatten(-2), (jac * mask[..., None]).flatten(-3, -2)

    def positive_brightness(p: torch.Tensor) -> torch.Tensor:
        return torch.cat([p[..., :2], p[..., 2:3].clamp(min=1e-3), p[..., 3:]], -1)

    params, _ = levenberg_marquardt(residuals, start_params, iterations, project=positive_brightness)
    fitted = params[..., :2].numpy()
    # a fit that wandered off its window is not to be trusted: fall back to the centroid
    wandered = np.abs(fitted - start).max(-1, keepdims=True) > radius
    return np.where(wandered, start, fitted).astype(np.float32)


BASELINES = ("argmax", "centroid", "gaussian_fit")
EXTRA_CANDIDATES = 8  # a counting detector keeps the K + this many highest peaks, K the most per image


def candidate_peaks(images: np.ndarray, spec: DataSpec, most: int) -> tuple[np.ndarray, np.ndarray]:
    """The `most` highest local maxima of each image smoothed by the spot's own Gaussian (the
    matched filter): flat indices (N, M) and scores (N, M), the smoothed height above the
    image's median, -inf where an image has fewer maxima. Thresholding the score counts spots."""
    x = torch.from_numpy(images).float()[:, None]
    if spec.blur > 0:
        x = gaussian_smooth(x, spec.blur)
    suppress = max(1, peak_radius(spec) // 2)
    ranked = tie_broken(x)
    pooled = F.max_pool2d(ranked, 2 * suppress + 1, stride=1, padding=suppress).flatten(1)
    flat = ranked.flatten(1)
    level = flat.median(1, keepdim=True).values
    score = torch.where(flat >= pooled, flat - level, torch.full_like(flat, -math.inf))
    values, index = score.topk(min(most, flat.shape[1]), dim=1)
    return index.numpy(), values.numpy()


def tie_broken(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) images in float64, each pixel lowered by a billionth per place in the image,
    so that a plateau of equal values has exactly one highest pixel (and one local maximum)."""
    order = torch.arange(images[0].numel(), dtype=torch.float64).reshape(images.shape[1:])
    return images.double() - order * 1e-9


def baseline_detections(name: str, images: np.ndarray, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate spot of a classical method that counts: local maxima scored by height,
    at the pixel (argmax), refined by centroid or by Gaussian fit; points (N, M, 2) padded
    with NaN, and scores (N, M), to be thresholded."""
    if name == "trackpy":
        return trackpy_detections(images, spec)
    peaks, scores = candidate_peaks(images, spec, spec.most_points + EXTRA_CANDIDATES)
    if name == "argmax":
        ys, xs = np.divmod(peaks, images.shape[2])
        points = np.stack([xs, ys], axis=-1).astype(np.float32)
    elif name == "centroid":
        points = centroid_at(images, peaks, spec)
    elif name == "gaussian_fit":
        points = gaussian_fit_at(images, peaks, spec)
    elif name == "poisson_mle":
        points = poisson_mle_at(images, peaks, spec)
    else:
        raise ValueError(f"unknown baseline {name!r}")
    return np.where(np.isfinite(scores)[..., None], points, np.nan), scores


def baseline_points(name: str, images: np.ndarray, k: int, spec: DataSpec) -> np.ndarray:
    """(N, K, 2) predictions of the named classical method."""
    if name == "argmax":
        return argmax_points(images, k, max(1, peak_radius(spec) // 2))
    if name == "centroid":
        return centroid_points(images, k, spec)
    if name == "gaussian_fit":
        return gaussian_fit_points(images, k, spec)
    if name == "poisson_mle":
        return poisson_mle_points(images, k, spec)
    raise ValueError(f"unknown baseline {name!r}")


def baselines_for(spec: DataSpec | None) -> tuple[str, ...]:
    """The classical methods that suit the data: a Poisson ML fit in place of least squares
    where images count photons (Smith et al. 2010); no fit of a blur-free spot."""
    if spec is not None and spec.camera_model:
        return ("argmax", "centroid", "poisson_mle")
    if spec is not None and spec.blur == 0:
        return ("argmax", "centroid")
    return BASELINES


def poisson_mle_points(images: np.ndarray, k: int, spec: DataSpec) -> np.ndarray:
    """(N, K, 2): the Poisson maximum-likelihood fit of position, photons and background (and
    sigma, when blur varies) around each of the K highest peaks of photon images, started
    from its centroid."""
    return poisson_mle_at(
        images, find_peaks(images, k, max(1, peak_radius(spec) // 2), smooth=spec.blur), spec
    )


def poisson_mle_at(images: np.ndarray, peaks: np.ndarray, spec: DataSpec) -> np.ndarray:
    """(N, K, 2): the fit of `poisson_mle_points` around each peak (flat index) given."""
    start = centroid_at(images, peaks, spec).astype(np.float64)
    psf = spec.sampled_psf  # the spec's own PSF, at the middle of its depths
    photons, background = photometry_start(images, start, spec.equivalent_sigma)
    shape = spec.mean_blur if psf is None else spec.middle_z
    free = (True, True, True, True, psf is None and spec.blur_max is not None)
    fitted = poisson_fit(images, start, photons, background, shape, spec.camera, free, psf=psf)
    return fitted[..., :2].astype(np.float32)
