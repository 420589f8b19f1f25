"""The Cramér-Rao lower bounds on localization: the exact Fisher information of a pixelated spot
under Poisson, EM-gain and read noise (and under Gaussian noise for grey levels), and the
closed forms of Thompson et al. 2002 and Mortensen et al. 2010."""

from __future__ import annotations

import math

import numpy as np
import torch

from pixelreg.fit.defaults import MIN_BOUND_BLUR
from pixelreg.fit.psf import (
    POSITION_AND_PHOTOMETRY,
    spot_and_derivatives,
    spot_parameters,
    window_radius,
    windows_around,
)
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.psf import SampledPSF
from pixelreg.simulate.render import expected_image
from pixelreg.simulate.spec import DataSpec


def fisher_information(
    mu: torch.Tensor, jac: torch.Tensor, inside: torch.Tensor, camera: Camera
) -> torch.Tensor:
    """(..., P, P) Fisher information of spots of expected photons `mu` (..., R, C) and their
    derivatives `jac` (..., R, C, P) by P parameters, on the pixels `inside` their windows: sum
    over pixels of d mu d mu^T / (mu + read variance), in photoelectrons, halved by EM gain."""
    mu_e, jac_e = camera.qe * mu, camera.qe * jac
    weight = inside / (mu_e + camera.read_variance).clamp(min=1e-12) / camera.excess_noise
    jac_e = jac_e.flatten(-3, -2)  # (..., pixels, 5): a batched matrix product, not an einsum's loops
    return (jac_e * weight.flatten(-2)[..., None]).transpose(-1, -2) @ jac_e


def crlb(
    points: np.ndarray,
    photons: np.ndarray,
    background: np.ndarray,
    sigma: np.ndarray | float,
    camera: Camera,
    size: tuple[int, int],
    free: tuple[bool, ...] = POSITION_AND_PHOTOMETRY,
    psf: SampledPSF | None = None,
    z: np.ndarray | float = 0.0,
) -> np.ndarray:
    """(..., 5) the bound on the standard deviation of each parameter of spots at `points`
    (..., 2) with `photons`, `background` (photons per pixel) and `sigma` (...), every
    parameter marked `free` unknown to the estimator; NaN for a fixed parameter. With a sampled
    `psf`, the spots are its own at depths `z` nm (...), and the fifth parameter is the depth."""
    theta = spot_parameters(points, photons, background, sigma)
    if psf is None:
        radius = window_radius(float(np.max(sigma)) if np.size(sigma) else 1.0)
        xs, ys, inside = (torch.from_numpy(a) for a in windows_around(points, *size, radius))
        mu, jac = spot_and_derivatives(theta, xs, ys)
    else:
        depths = torch.from_numpy(np.broadcast_to(np.asarray(z, dtype=np.float64), theta.shape[:-1]).copy())
        inside = torch.from_numpy(windows_around(points, *size, psf.radius)[2])
        mu, jac = sampled_spots(theta, depths, psf)
    information = fisher_information(mu, jac, inside.double(), camera)
    chosen = torch.tensor(free)
    sub = information[..., chosen, :][..., :, chosen]
    variance = torch.full(theta.shape, math.nan, dtype=torch.float64)
    inverse, singular = torch.linalg.inv_ex(sub)
    if bool(singular.any()):  # no light, or none of a parameter's: the pseudo-inverse's bound
        inverse[singular != 0] = torch.linalg.pinv(sub[singular != 0])
    variance[..., chosen] = torch.diagonal(inverse, dim1=-2, dim2=-1)
    return variance.clamp(min=0).sqrt().numpy()


def sampled_spots(
    theta: torch.Tensor, depth: torch.Tensor, psf: SampledPSF, middles: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`spot_and_derivatives` through a sampled PSF: mu (..., R, C) of the spots `theta` (..., 5,
    its sigma unused) at `depth` (...) nm in the windows around their pixels (or around the
    pixels `middles` (..., 2)), and d mu / d (x, y, photons, background, depth) (..., R, C, 5)."""
    lead = theta.shape[:-1]
    if middles is not None:
        middles = middles.reshape(-1, 2)
    shares, by = psf.window(theta.reshape(-1, 5)[:, :2], depth.reshape(-1), psf.radius, True, middles)
    assert by is not None
    side = shares.shape[-1]
    shares, by = shares.reshape(*lead, side, side), by.reshape(*lead, side, side, 3)
    photons, background = theta[..., 2, None, None], theta[..., 3, None, None]
    mu = background + photons * shares
    ones = torch.ones_like(mu)
    jac = torch.stack([photons * by[..., 0], photons * by[..., 1], shares, ones, photons * by[..., 2]], -1)
    return mu, jac


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


def crlb_px(points: np.ndarray, spec: DataSpec, step: float = 1e-3) -> float:
    """Cramér-Rao bound on the 2-D position RMSE for single spots at `points` (N, 1, 2).

    Fisher information under additive Gaussian noise, I = J^T J / noise^2, with J the
    derivatives of the expected image by (x, y), taken by central differences of the very
    renderer that makes the data. Brightness and background are the spec's constants, so
    they are known to any estimator trained on it. The bound is averaged over the given
    positions: sqrt(mean over spots of trace(I^-1)). Clipping and uint8 rounding are
    ignored (negligible while the background keeps the noise clear of 0 and 255).
    """
    if spec.noise <= 0 or points.shape[1] != 1 or spec.blur < MIN_BOUND_BLUR:
        return float("nan")
    points = np.asarray(points, dtype=np.float64)
    derivatives = []
    for axis in (0, 1):
        shift = np.zeros(2)
        shift[axis] = step
        plus = expected_image(points + shift, spec)
        minus = expected_image(points - shift, spec)
        derivatives.append(((plus - minus) / (2 * step)).reshape(len(points), -1))
    jac = np.stack(derivatives, -1)  # (N, pixels, 2)
    fisher = jac.transpose(0, 2, 1) @ jac / spec.noise**2  # (N, 2, 2)
    if (np.linalg.det(fisher) <= 0).any():
        return float("nan")  # a spot whose image does not move with it: no bound
    variance = np.trace(np.linalg.inv(fisher), axis1=1, axis2=2)
    return float(math.sqrt(variance.mean()))
