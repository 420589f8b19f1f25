"""The Poisson maximum-likelihood fit of a pixel-integrated Gaussian spot (Smith et al., Nature
Methods 2010), and photometry: each localization's photons, background and uncertainty.

The parameters are (x, y, N, b, s), any of them held fixed; everything is vectorised over spots.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelreg.fit.background import background_level
from pixelreg.fit.bounds import crlb, sampled_spots
from pixelreg.fit.psf import (
    POSITION_AND_PHOTOMETRY,
    integrated_gaussian,
    spot_and_derivatives,
    spot_parameters,
    window_pixels,
    window_radius,
    windows_around,
)
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.psf import SampledPSF

FIT_ITERATIONS = 30
PHOTOMETRY_ITERATIONS = 8  # photons and background alone converge within 1e-4 of 30 steps' values


def poisson_fit(
    images: np.ndarray,
    points: np.ndarray,
    photons: np.ndarray,
    background: np.ndarray,
    sigma: np.ndarray | float,
    camera: Camera,
    free: tuple[bool, ...] = POSITION_AND_PHOTOMETRY,
    iterations: int = FIT_ITERATIONS,
    psf: SampledPSF | None = None,
) -> np.ndarray:
    """(N, K, 5) maximum-likelihood (x, y, photons, background, sigma) of a spot near each point
    (N, K, 2) of photon images (N, H, W), started from the given values (..., broadcast to
    (N, K)); the parameters not `free` stay as given. With a sampled `psf` the spots are its
    own, and `sigma` is their depth in nm (the fifth parameter).

    Fisher scoring on the Poisson likelihood of photoelectrons, with the read noise's variance
    added to data and model alike (Huang et al. 2013), so that it also holds for sCMOS pixels.
    """
    height, width = images.shape[1:]
    theta = spot_parameters(points, photons, background, sigma)
    start = theta.clone()
    if psf is None:
        radius = window_radius(float(np.max(sigma)) if np.size(sigma) else 1.0)
    else:
        radius, (low, high) = psf.radius, psf.z_range
    xs_np, ys_np, inside_np = windows_around(points, height, width, radius)
    values = window_pixels(images, xs_np, ys_np)
    xs, ys, inside = (torch.from_numpy(a) for a in (xs_np, ys_np, inside_np))
    inside = inside.double()
    middles = torch.stack([xs[..., 0, radius], ys[..., radius, 0]], -1)  # each window's middle pixel
    shift = camera.read_variance
    data = camera.qe * torch.from_numpy(values.astype(np.float64)) + shift

    def spots(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if psf is None:
            return spot_and_derivatives(theta, xs, ys)
        return sampled_spots(theta, theta[..., 4], psf, middles)

    if free == (False, False, True, True, False):  # photons and background alone: mu is linear
        shape = spots(theta)[1][..., 2]  # d mu / d photons: the spot's shape
        theta[..., 2], theta[..., 3] = _photometry_fit(
            data, inside, shape, theta[..., 2], theta[..., 3], camera, iterations
        )
        return theta.numpy()
    chosen = torch.tensor(free)
    eye = torch.eye(int(chosen.sum()), dtype=torch.float64)
    for _ in range(iterations):
        mu, jac = spots(theta)
        model = (camera.qe * mu).clamp(min=1e-9) + shift
        jac_e = camera.qe * jac[..., chosen]
        gradient = torch.einsum("...rc,...rci->...i", inside * (data / model - 1.0), jac_e)
        information = torch.einsum("...rc,...rci,...rcj->...ij", inside / model, jac_e, jac_e)
        step = torch.linalg.solve(information + 1e-9 * eye, gradient[..., None])[..., 0]
        if free[0]:  # a position moves at most a pixel a step
            step[..., :2] = step[..., :2].clamp(-1.0, 1.0)
        update = torch.zeros_like(theta)
        update[..., chosen] = step
        theta = theta + update
        theta[..., 2] = theta[..., 2].clamp(min=1.0)  # photons
        theta[..., 3] = theta[..., 3].clamp(min=-shift / camera.qe + 1e-6)  # background
        theta[..., 4] = theta[..., 4].clamp(0.3, 5.0) if psf is None else theta[..., 4].clamp(low, high)
    fitted = theta.numpy()
    # a fit that wandered off its window is not to be trusted: keep where it started
    wandered = (np.abs(fitted[..., :2] - start[..., :2].numpy()).max(-1) > radius) | ~np.isfinite(fitted).all(
        -1
    )
    return np.where(wandered[..., None], start.numpy(), fitted)


DEPTH_STARTS = 3  # a 3D fit starts at this many depths across the PSF's, and keeps the likeliest


def poisson_fit_3d(
    images: np.ndarray,
    points: np.ndarray,
    photons: np.ndarray,
    background: np.ndarray,
    psf: SampledPSF,
    camera: Camera,
    starts: int = DEPTH_STARTS,
) -> np.ndarray:
    """(N, K, 5) the Poisson ML fit of (x, y, photons, background, z) of a spot of the sampled
    `psf` near each point (N, K, 2), as SMAP's and Picasso's spline fitters fit astigmatic
    spots: from `starts` depths spread over the middle two thirds of the PSF's (a single start
    can settle in the mirror depth of an astigmatic spot), the fit of the highest likelihood."""
    low, high = psf.z_range
    depths = (
        np.linspace(low + (high - low) / 6, high - (high - low) / 6, starts)
        if starts > 1
        else [(low + high) / 2]
    )
    best, best_likelihood = None, None
    for depth in depths:
        fitted = poisson_fit(images, points, photons, background, float(depth), camera, (True,) * 5, psf=psf)
        likelihood = log_likelihood(images, points, fitted, camera, psf)
        if best is None or best_likelihood is None:
            best, best_likelihood = fitted, likelihood
            continue
        better = likelihood > best_likelihood
        best = np.where(better[..., None], fitted, best)
        best_likelihood = np.where(better, likelihood, best_likelihood)
    assert best is not None
    return best


def log_likelihood(
    images: np.ndarray, points: np.ndarray, theta: np.ndarray, camera: Camera, psf: SampledPSF
) -> np.ndarray:
    """(N, K) the Poisson log-likelihood (up to a constant) of the window around each point
    (N, K, 2) of photon images (N, H, W) under the fitted spots `theta` (N, K, 5) of a sampled
    PSF, read noise as in `poisson_fit`: the sum of d log(mu) - mu over the window's pixels.
    Fits of one spot compare on one window, wherever each moved."""
    height, width = images.shape[1:]
    xs, ys, inside = windows_around(points, height, width, psf.radius)
    data = (
        camera.qe * torch.from_numpy(window_pixels(images, xs, ys).astype(np.float64)) + camera.read_variance
    )
    middles = torch.stack(
        [torch.from_numpy(xs)[..., 0, psf.radius], torch.from_numpy(ys)[..., psf.radius, 0]], -1
    )
    parameters = torch.from_numpy(np.asarray(theta, dtype=np.float64))
    mu = sampled_spots(parameters, parameters[..., 4], psf, middles)[0]
    model = (camera.qe * mu).clamp(min=1e-9) + camera.read_variance
    terms = (data * torch.log(model) - model) * torch.from_numpy(inside).double()
    return terms.sum((-2, -1)).numpy()


def _photometry_fit(data, inside, shape, photons, background, camera: Camera, iterations: int):
    """Fisher scoring of (photons, background) alone for spots of a fixed `shape` (..., R, C): the
    2x2 system of `poisson_fit` solved in closed form, on sums over each window's pixels. The
    pixels are worked in the dtype of `data`, each spot's sums and step in float64."""
    shift, qe = camera.read_variance, camera.qe
    g = qe * shape
    g_squared = g * g
    for _ in range(iterations):
        spot = photons.to(data.dtype)[..., None, None] * g
        model = (spot + qe * background.to(data.dtype)[..., None, None]).clamp_(min=1e-9).add_(shift)
        weight = inside / model
        residual = (data * weight).sub_(inside)  # inside * (data / model - 1)
        grad_n, grad_b = (residual * g).sum((-2, -1)).double(), qe * residual.sum((-2, -1)).double()
        i_nn = (weight * g_squared).sum((-2, -1)).double()
        i_nb = qe * (weight * g).sum((-2, -1)).double()
        i_bb = qe * qe * weight.sum((-2, -1)).double()
        det = (i_nn * i_bb - i_nb * i_nb).clamp(min=1e-12)
        photons = (photons + (i_bb * grad_n - i_nb * grad_b) / det).clamp(min=1.0)
        background = (background + (i_nn * grad_b - i_nb * grad_n) / det).clamp(min=-shift / qe + 1e-6)
    return photons, background


def measure_spots(
    images: np.ndarray,
    points: np.ndarray,
    sigma: float | np.ndarray,
    camera: Camera,
    fit_sigma: bool = False,
    psf: SampledPSF | None = None,
) -> dict[str, np.ndarray]:
    """What each localization is worth: at each point (N, K, 2) of photon images (N, H, W), the
    photons, background (photons per pixel) and sigma by a Poisson ML fit with the position
    held where it was found, and the uncertainty (px, per axis): the Fisher bound at those
    values, every parameter unknown. NaN where a point is NaN (N, K) arrays. Through a sampled
    `psf`, `sigma` is the spots' depth (nm, held): one for all, or each spot's (N, K) as a 3D
    model reads it, whose bound counts the depth unknown too; the sigma reported is the PSF's
    Gaussian-equivalent width at the middle depth."""
    present = np.isfinite(points).all(-1)
    where = np.where(present[..., None], points, 0.0).astype(np.float64)
    if fit_sigma or psf is not None:
        three_d = psf is not None and np.ndim(sigma) > 0
        if three_d:
            sigma = np.clip(np.nan_to_num(np.asarray(sigma, dtype=np.float64)), *psf.z_range)  # type: ignore[union-attr]
        middle = float(np.median(sigma)) if np.size(sigma) else 0.0
        width = float(np.max(sigma)) if psf is None else psf.gaussian_sigma(middle)
        start_photons, start_background = photometry_start(images, where, width)
        free = (False, False, True, True, psf is None)
        fitted = poisson_fit(
            images, where, start_photons, start_background, sigma, camera, free, PHOTOMETRY_ITERATIONS, psf
        )
        bound = crlb(
            where, fitted[..., 2], fitted[..., 3], fitted[..., 4], camera, images.shape[1:],
            (True, True, True, True, psf is None or three_d), psf, sigma,
        )  # fmt: skip
        photons, background = fitted[..., 2], fitted[..., 3]
        spot_sigma = fitted[..., 4] if psf is None else np.full(photons.shape, width)
        variance = bound[..., 0] ** 2 + bound[..., 1] ** 2
    else:
        photons, background, variance = _known_sigma_photometry(images, where, float(sigma), camera)
        spot_sigma = np.full(photons.shape, sigma, dtype=np.float64)
    values = {"photons": photons, "background": background, "sigma": spot_sigma}
    values["uncertainty"] = np.sqrt(variance / 2)
    return {key: np.where(present, value, np.nan) for key, value in values.items()}


def _known_sigma_photometry(
    images: np.ndarray, points: np.ndarray, sigma: float, camera: Camera
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`measure_spots` where sigma is known (the usual case: every spot of every frame of a
    movie): photons, background and the bound's variance of x plus that of y, (N, K) each.

    The same fit and bound as `poisson_fit` and `crlb`, at a quarter of their time: each window
    is gathered once, the spot's shape is separable and computed once for both, and the pixels
    are worked in float32 (sums of about a hundred of them), each spot's small systems in float64.
    """
    height, width = images.shape[1:]
    xs, ys, inside = windows_around(points, height, width, window_radius(sigma))
    pixels = window_pixels(images, xs, ys).astype(np.float32, copy=False)
    light, level = _start(images, pixels, inside)
    values, mask = torch.from_numpy(pixels), torch.from_numpy(inside).float()
    along_x = integrated_gaussian(torch.from_numpy(points[..., 0, None, None]), torch.from_numpy(xs), sigma)
    along_y = integrated_gaussian(torch.from_numpy(points[..., 1, None, None]), torch.from_numpy(ys), sigma)
    (gx, dgx), (gy, dgy) = ((a.float(), b.float()) for a, b, _ in (along_x, along_y))
    shape = gx * gy  # (N, K, R, C): the spot's share of its light in each pixel
    photons, background = _photometry_fit(
        camera.qe * values + camera.read_variance,
        mask,
        shape,
        torch.from_numpy(light.astype(np.float64)),
        torch.from_numpy(level.astype(np.float64)),
        camera,
        PHOTOMETRY_ITERATIONS,
    )
    # the Fisher information of (x, y, photons, background) at the fitted values, as `crlb`'s
    brightness = photons.float()[..., None, None]
    expected = camera.qe * (background.float()[..., None, None] + brightness * shape)
    weight = mask / (expected + camera.read_variance).clamp(min=1e-12) / camera.excess_noise
    jacobian = camera.qe * torch.stack(
        [brightness * dgx * gy, brightness * gx * dgy, shape, torch.ones_like(shape)], -1
    ).flatten(-3, -2)  # (N, K, pixels, 4)
    information = ((jacobian * weight.flatten(-2)[..., None]).transpose(-1, -2) @ jacobian).double()
    inverse, singular = torch.linalg.inv_ex(information)
    if bool(singular.any()):  # no light: the pseudo-inverse's bound
        inverse[singular != 0] = torch.linalg.pinv(information[singular != 0])
    variance = torch.diagonal(inverse, dim1=-2, dim2=-1)[..., :2].clamp(min=0).sum(-1)
    return photons.numpy(), background.numpy(), variance.numpy()


def photometry_start(images: np.ndarray, points: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """A first guess of each spot's photons (the light in its window above the image's median)
    and background (the median)."""
    height, width = images.shape[1:]
    xs, ys, inside = windows_around(points, height, width, window_radius(sigma))
    return _start(images, window_pixels(images, xs, ys), inside)


def _start(images: np.ndarray, values: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`photometry_start` from the pixels `values` (N, K, R, C) of the spots' windows."""
    background = background_level(torch.as_tensor(images.reshape(len(images), -1))).numpy()[:, None]
    light = ((values - background[..., None, None]) * inside).sum((-2, -1))
    return np.clip(light, 10.0, None), np.broadcast_to(background, values.shape[:2])
