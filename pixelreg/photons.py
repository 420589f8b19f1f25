"""Localization under photon noise: the Fisher bound, its closed forms, and the Poisson
maximum-likelihood fit of a pixel-integrated Gaussian spot (Smith et al., Nature Methods 2010).

A spot in a window of pixels is mu_k = b + N * gx_k * gy_k photons: N photons spread by a
Gaussian of sigma `s` integrated over each pixel, on b photons of background per pixel. The
parameters are (x, y, N, b, s), any of them held fixed. Everything is vectorised over spots.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .camera import Camera

PARAMETERS = ("x", "y", "photons", "background", "sigma")
POSITION_AND_PHOTOMETRY = (True, True, True, True, False)  # the usual fit: sigma known
WINDOW_SIGMAS = 4.0  # a window reaches this many sigmas from the spot's pixel: all of its light
FIT_ITERATIONS = 30
PHOTOMETRY_ITERATIONS = 8  # photons and background alone converge within 1e-4 of 30 steps' values


LEVEL_SAMPLES = 2**16  # a larger image's background is the median of this many of its pixels, evenly spread


def background_level(flat: torch.Tensor) -> torch.Tensor:
    """(N,) each image's background, as the models take it: the median of its pixels (N, P), of
    an even sample of LEVEL_SAMPLES of them in larger images (as exact, a tenth of the time)."""
    if flat.shape[1] >= 2 * LEVEL_SAMPLES:
        flat = flat[:, :: flat.shape[1] // LEVEL_SAMPLES]
    return lower_median(flat)


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """`values.median(-1).values` (of an even count, the lower middle value), on the CPU by
    numpy's partition: in two thirds of the time, and the background of every frame takes it."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return values.median(-1).values
    middle = (values.shape[-1] - 1) // 2
    array = values.detach().numpy()
    median = np.partition(array, middle, axis=-1)[..., middle]
    return torch.from_numpy(
        np.where(np.isnan(array).any(-1), np.nan, median).astype(array.dtype)
    )  # NaN as torch's


LEVEL_BLOCK = 32  # px: a large frame's background is mapped from the medians of blocks this size


def background_map(frames: torch.Tensor, block: int = LEVEL_BLOCK) -> torch.Tensor:
    """(N,) each frame's background level (`background_level`) for frames (N, 1, H, W) up to
    4 blocks a side, the size the models train on; for larger ones, whose illumination or sky
    may vary over the field, a map (N, 1, H, W): the median of each `block` x `block` square,
    smoothly interpolated between the squares' centres."""
    height, width = frames.shape[-2:]
    if min(height, width) < 4 * block:
        return background_level(frames.flatten(1))
    rows, cols = -(-height // block), -(-width // block)
    padded = torch.nn.functional.pad(
        frames, (0, cols * block - width, 0, rows * block - height), mode="replicate"
    )
    squares = padded.unfold(2, block, block).unfold(3, block, block)  # (N, 1, R, C, block, block)
    medians = lower_median(squares.flatten(-2))  # (N, 1, R, C)
    level = torch.nn.functional.interpolate(
        medians, size=(rows * block, cols * block), mode="bilinear", align_corners=False
    )
    return level[..., :height, :width].contiguous()


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


def _windows_around(points: np.ndarray, height: int, width: int, radius: int):
    """Pixel coordinates (..., 2r+1, 1) and (..., 1, 2r+1) of a window around each point's
    pixel, and which of them lie in the image (..., 2r+1, 2r+1)."""
    centre = np.floor(np.asarray(points, dtype=np.float64) + 0.5)
    steps = np.arange(-radius, radius + 1, dtype=np.float64)
    xs = centre[..., 0, None, None] + steps[None, :]
    ys = centre[..., 1, None, None] + steps[:, None]
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return xs, ys, inside


def window_pixels(images: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The pixels (..., R, C) of images (N, H, W) at coordinates xs (N, ..., 1 or R, C) and ys
    (N, ..., R, 1 or C), those off the image read at its nearest edge (mask them): one `take`
    of their places in the frames, half a fancy index's time."""
    n, height, width = images.shape
    frame = np.arange(n).reshape((n,) + (1,) * (np.ndim(ys) - 1))
    row = np.clip(ys, 0, height - 1).astype(np.int64) + frame * height
    return images.reshape(-1).take(row * width + np.clip(xs, 0, width - 1).astype(np.int64))


def fisher_information(
    theta: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, inside: torch.Tensor, camera: Camera
) -> torch.Tensor:
    """(..., 5, 5) Fisher information of the spots `theta` on the pixels `inside` their windows:
    sum over pixels of d mu d mu^T / (mu + read variance), in photoelectrons, halved by EM gain."""
    mu, jac = spot_and_derivatives(theta, xs, ys)
    mu_e, jac_e = camera.qe * mu, camera.qe * jac
    weight = inside / (mu_e + camera.read_variance).clamp(min=1e-12) / camera.excess_noise
    jac_e = jac_e.flatten(-3, -2)  # (..., pixels, 5): a batched matrix product, not an einsum's loops
    return (jac_e * weight.flatten(-2)[..., None]).transpose(-1, -2) @ jac_e


def crlb(
    points: np.ndarray,
    photons: np.ndarray,
    background: np.ndarray,
    sigma: np.ndarray,
    camera: Camera,
    size: tuple[int, int],
    free: tuple[bool, ...] = POSITION_AND_PHOTOMETRY,
) -> np.ndarray:
    """(..., 5) the bound on the standard deviation of each parameter of spots at `points`
    (..., 2) with `photons`, `background` (photons per pixel) and `sigma` (...), every
    parameter marked `free` unknown to the estimator; NaN for a fixed parameter."""
    theta = _theta(points, photons, background, sigma)
    radius = window_radius(float(np.max(sigma)) if np.size(sigma) else 1.0)
    xs, ys, inside = (torch.from_numpy(a) for a in _windows_around(points, *size, radius))
    information = fisher_information(theta, xs, ys, inside.double(), camera)
    chosen = torch.tensor(free)
    sub = information[..., chosen, :][..., :, chosen]
    variance = torch.full(theta.shape, math.nan, dtype=torch.float64)
    inverse, singular = torch.linalg.inv_ex(sub)
    if bool(singular.any()):  # no light, or none of a parameter's: the pseudo-inverse's bound
        inverse[singular != 0] = torch.linalg.pinv(sub[singular != 0])
    variance[..., chosen] = torch.diagonal(inverse, dim1=-2, dim2=-1)
    return variance.clamp(min=0).sqrt().numpy()


def _theta(points, photons, background, sigma) -> torch.Tensor:
    points = np.asarray(points, dtype=np.float64)
    parts = [points[..., 0], points[..., 1]]
    parts += [
        np.broadcast_to(np.asarray(v, dtype=np.float64), points.shape[:-1])
        for v in (photons, background, sigma)
    ]
    return torch.from_numpy(np.stack(parts, -1).copy())


def poisson_fit(
    images: np.ndarray,
    points: np.ndarray,
    photons: np.ndarray,
    background: np.ndarray,
    sigma: np.ndarray,
    camera: Camera,
    free: tuple[bool, ...] = POSITION_AND_PHOTOMETRY,
    iterations: int = FIT_ITERATIONS,
) -> np.ndarray:
    """(N, K, 5) maximum-likelihood (x, y, photons, background, sigma) of a spot near each point
    (N, K, 2) of photon images (N, H, W), started from the given values (..., broadcast to
    (N, K)); the parameters not `free` stay as given.

    Fisher scoring on the Poisson likelihood of photoelectrons, with the read noise's variance
    added to data and model alike (Huang et al. 2013), so that it also holds for sCMOS pixels.
    """
    height, width = images.shape[1:]
    theta = _theta(points, photons, background, sigma)
    start = theta.clone()
    radius = window_radius(float(np.max(sigma)) if np.size(sigma) else 1.0)
    xs_np, ys_np, inside_np = _windows_around(points, height, width, radius)
    values = window_pixels(images, xs_np, ys_np)
    xs, ys, inside = (torch.from_numpy(a) for a in (xs_np, ys_np, inside_np))
    inside = inside.double()
    shift = camera.read_variance
    data = camera.qe * torch.from_numpy(values.astype(np.float64)) + shift
    if free == (False, False, True, True, False):  # photons and background alone: mu is linear
        shape = spot_and_derivatives(theta, xs, ys)[1][..., 2]  # d mu / d photons: the spot's shape
        theta[..., 2], theta[..., 3] = _photometry_fit(
            data, inside, shape, theta[..., 2], theta[..., 3], camera, iterations
        )
        return theta.numpy()
    chosen = torch.tensor(free)
    eye = torch.eye(int(chosen.sum()), dtype=torch.float64)
    for _ in range(iterations):
        mu, jac = spot_and_derivatives(theta, xs, ys)
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
        theta[..., 4] = theta[..., 4].clamp(0.3, 5.0)  # sigma
    fitted = theta.numpy()
    # a fit that wandered off its window is not to be trusted: keep where it started
    wandered = (np.abs(fitted[..., :2] - start[..., :2].numpy()).max(-1) > radius) | ~np.isfinite(fitted).all(
        -1
    )
    return np.where(wandered[..., None], start.numpy(), fitted)


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


# --- closed forms, for one axis (REFERENCES.md), pixel size a = 1 -----------------------------


def thompson_variance(photons: float, background: float, sigma: float) -> float:
    """Thompson, Larson & Webb 2002: sigma_a^2 / N + 8 pi sigma^4 b / N^2."""
    sigma_a2 = sigma**2 + 1 / 12
    return sigma_a2 / photons + 8 * math.pi * sigma**4 * background / photons**2


def mortensen_mle_variance(photons: float, background: float, sigma: float) -> float:
    """Mortensen et al. 2010, maximum likelihood: sigma_a^2 / N * [1 + int_0^1 ln t / (1 + t / tau) dt]^-1."""
    sigma_a2 = sigma**2 + 1 / 12
    if background <= 0:
        return sigma_a2 / photons
    tau = 2 * math.pi * sigma_a2 * background / photons
    t = (np.arange(200_000) + 0.5) / 200_000  # midpoints: the log's singularity at 0 is integrable
    integral = float(np.mean(np.log(t) / (1 + t / tau)))
    return sigma_a2 / photons / (1 + integral)


def mortensen_ls_variance(photons: float, background: float, sigma: float) -> float:
    """Mortensen et al. 2010, least squares: sigma_a^2 / N * (16/9 + 8 pi sigma_a^2 b / N)."""
    sigma_a2 = sigma**2 + 1 / 12
    return sigma_a2 / photons * (16 / 9 + 8 * math.pi * sigma_a2 * background / photons)


def measure_spots(
    images: np.ndarray, points: np.ndarray, sigma: float, camera: Camera, fit_sigma: bool = False
) -> dict[str, np.ndarray]:
    """What each localization is worth: at each point (N, K, 2) of photon images (N, H, W), the
    photons, background (photons per pixel) and sigma by a Poisson ML fit with the position
    held where it was found, and the uncertainty (px, per axis): the Fisher bound at those
    values, every parameter unknown. NaN where a point is NaN (N, K) arrays."""
    present = np.isfinite(points).all(-1)
    where = np.where(present[..., None], points, 0.0).astype(np.float64)
    if fit_sigma:
        start_photons, start_background = photometry_start(images, where, sigma)
        free = (False, False, True, True, True)
        fitted = poisson_fit(
            images, where, start_photons, start_background, sigma, camera, free, PHOTOMETRY_ITERATIONS
        )
        bound = crlb(
            where, fitted[..., 2], fitted[..., 3], fitted[..., 4], camera, images.shape[1:], (True,) * 5
        )
        photons, background, spot_sigma = fitted[..., 2], fitted[..., 3], fitted[..., 4]
        variance = bound[..., 0] ** 2 + bound[..., 1] ** 2
    else:
        photons, background, variance = _known_sigma_photometry(images, where, sigma, camera)
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
    xs, ys, inside = _windows_around(points, height, width, window_radius(sigma))
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
    xs, ys, inside = _windows_around(points, *images.shape[1:], window_radius(sigma))
    return _start(images, window_pixels(images, xs, ys), inside)


def _start(images: np.ndarray, values: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`photometry_start` from the pixels `values` (N, K, R, C) of the spots' windows."""
    background = background_level(torch.as_tensor(images.reshape(len(images), -1))).numpy()[:, None]
    light = ((values - background[..., None, None]) * inside).sum((-2, -1))
    return np.clip(light, 10.0, None), np.broadcast_to(background, values.shape[:2])
