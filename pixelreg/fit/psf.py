"""The Gaussian PSF integrated over pixels, its derivatives, and the windows of pixels around spots.

A spot in a window of pixels is mu_k = b + N * gx_k * gy_k photons: N photons spread by a
Gaussian of sigma `s` integrated over each pixel, on b photons of background per pixel.
"""

from __future__ import annotations

import math

import numpy as np
import torch

WINDOW_SIGMAS = 4.0  # a window reaches this many sigmas from the spot's pixel: all of its light

PARAMETERS = ("x", "y", "photons", "background", "sigma")
POSITION_AND_PHOTOMETRY = (True, True, True, True, False)  # the usual fit: sigma known


def window_radius(sigma: float) -> int:
    """Half-width of the window that holds a spot of this sigma."""
    return max(2, math.ceil(WINDOW_SIGMAS * sigma))


def integrated_gaussian(centre: torch.Tensor, coords: torch.Tensor, sigma: torch.Tensor | float):
    """The share of a 1-D Gaussian in the unit pixel at `coords`, and its derivatives by the
    centre and by sigma."""
    root2 = math.sqrt(2.0)
    upper, lower = (coords + 0.5 - centre) / (sigma * root2), (coords - 0.5 - centre) / (sigma * root2)
    share = 0.5 * (torch.erf(upper) - torch.erf(lower))
    eu, el = torch.exp(-(upper**2)), torch.exp(-(lower**2))
    by_centre = -(eu - el) / (math.sqrt(math.pi) * sigma * root2)
    by_sigma = -(upper * eu - lower * el) / (math.sqrt(math.pi) * sigma)
    return share, by_centre, by_sigma


def spot_and_derivatives(theta: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor):
    """mu (..., R, C) photons of the spots `theta` (..., 5) at pixel coordinates xs (..., 1, C)
    and ys (..., R, 1), and d mu / d theta (..., R, C, 5)."""
    x, y, n, b, s = (theta[..., i, None, None] for i in range(5))
    sx, dsx, dsx_ds = integrated_gaussian(x, xs, s)
    sy, dsy, dsy_ds = integrated_gaussian(y, ys, s)
    mu = b + n * sx * sy
    ones = torch.ones_like(mu)
    jac = torch.stack([n * dsx * sy, n * sx * dsy, sx * sy * ones, ones, n * (dsx_ds * sy + sx * dsy_ds)], -1)
    return mu, jac


def windows_around(
    points: np.ndarray, height: int, width: int, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (..., 2r+1, 1) and (..., 1, 2r+1) of a window around each point's
    pixel, and which of them lie in the image (..., 2r+1, 2r+1)."""
    centre = np.floor(np.asarray(points, dtype=np.float64) + 0.5)
    steps = np.arange(-radius, radius + 1, dtype=np.float64)
    xs = centre[..., 0, None, None] + steps[None, :]
    ys = centre[..., 1, None, None] + steps[:, None]
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return xs, ys, inside


def window_pixels(
    images: np.ndarray, xs: np.ndarray, ys: np.ndarray, frames: np.ndarray | None = None
) -> np.ndarray:
    """The pixels (..., R, C) of images (N, H, W) at coordinates xs (M, ..., 1 or R, C) and ys
    (M, ..., R, 1 or C), the windows of image m in images[m], or in images[frames[m]] where
    `frames` (M,) is given; those off the image read at its nearest edge (mask them): one
    `take` of their places in the frames, half a fancy index's time. The one window gatherer
    of the fits, the photometry and the calibration."""
    n, height, width = images.shape
    count = n if frames is None else len(frames)
    frame = (np.arange(n) if frames is None else np.asarray(frames)).reshape(
        (count,) + (1,) * (np.ndim(ys) - 1)
    )
    row = np.clip(ys, 0, height - 1).astype(np.int64) + frame * height
    return images.reshape(-1).take(row * width + np.clip(xs, 0, width - 1).astype(np.int64))


def spot_parameters(points, photons, background, sigma) -> torch.Tensor:
    points = np.asarray(points, dtype=np.float64)
    parts = [points[..., 0], points[..., 1]]
    parts += [
        np.broadcast_to(np.asarray(v, dtype=np.float64), points.shape[:-1])
        for v in (photons, background, sigma)
    ]
    return torch.from_numpy(np.stack(parts, -1).copy())
