"""PSF models beyond the Gaussian: a sampled 3-D PSF interpolated by cubic B-splines, and the
scalar pupil-function PSF of an objective that makes one.

A `SampledPSF` holds the *pixel-integrated* PSF P(u, v, z): the share of an emitter's photons
that a pixel whose centre lies (u, v) px from the emitter receives, at depth z. It is sampled
on a grid of `oversample` points per pixel in u and v and on planes `z_step` nm apart, and a
tricubic B-spline through those samples gives P and its derivatives anywhere between them. So
a spot's pixel values are P at (pixel centre - position): the integral over each pixel is in
the samples, and a sub-pixel position only moves where the spline is read, which keeps
rendering free of phase bias. The Gaussian PSF keeps its own closed form (`fit.psf`); the
Fisher information, rendering and fits take either.

Depth z is in nanometres, 0 at focus, positive away from the objective. A PSF measured from a
movie alone has one plane, its spots' average over their depths.
"""

from __future__ import annotations

import functools
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelreg.errors import PixelregError

PSF_FORMAT = "pixelreg-psf-1"
MOST_SPOTS_AT_ONCE = 64  # spots whose 64 spline taps per pixel are gathered together (in cache)
REACH = 2  # px: a spot may lie this far from its window's middle pixel (a fit moving it)
ASTIGMATISM = 0.2  # the least turn of ellipticity over a PSF's depths that tells depth (`tells_depth`)


def _spline_weights(fraction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 4) cubic B-spline weights of the taps at floor - 1 .. floor + 2 for positions `fraction`
    past the floor (M,), and their derivatives by the position."""
    a = fraction[:, None]
    a2, a3 = a * a, a * a * a
    weights = torch.cat([(1 - a) ** 3, 3 * a3 - 6 * a2 + 4, -3 * a3 + 3 * a2 + 3 * a + 1, a3], 1) / 6
    slopes = torch.cat([-((1 - a) ** 2), 3 * a2 - 4 * a, -3 * a2 + 2 * a + 1, a2], 1) / 2
    return weights, slopes


def best_gaussian(samples: np.ndarray) -> tuple[float, np.ndarray]:
    """The sigma (px) and the pixels (S, S) of the pixel-integrated Gaussian, centred on the
    middle pixel, that fits the pixels `samples` (S, S, S odd) best in least squares."""
    reach = (samples.shape[-1] - 1) // 2
    target = torch.from_numpy(np.asarray(samples, dtype=np.float64))
    steps = torch.arange(-reach, reach + 1, dtype=torch.float64)

    def model(sigma: float) -> torch.Tensor:
        edges = (steps + 0.5) / (sigma * math.sqrt(2)), (steps - 0.5) / (sigma * math.sqrt(2))
        line = 0.5 * (torch.erf(edges[0]) - torch.erf(edges[1]))
        shape = line[:, None] * line[None, :]
        return shape * (shape * target).sum() / (shape * shape).sum()

    def misfit(sigma: float) -> float:
        return float(((model(sigma) - target) ** 2).sum())

    low, high = 0.2, float(max(reach, 1))
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden-section search: the misfit has one minimum in sigma
        a, b = high - golden * (high - low), low + golden * (high - low)
        low, high = (low, b) if misfit(a) < misfit(b) else (a, high)
    sigma = (low + high) / 2
    return sigma, model(sigma).numpy()


def _prefilter(values: np.ndarray, axis: int) -> np.ndarray:
    """B-spline coefficients along one axis: solve sum_j c_j beta3(i - j) = v_i, the samples
    mirrored at both ends (as the taps beyond the ends read them)."""
    n = values.shape[axis]
    if n == 1:
        return values.copy()
    system = np.eye(n) * (4 / 6) + np.eye(n, k=1) / 6 + np.eye(n, k=-1) / 6
    system[0, 1] = system[-1, -2] = 2 / 6
    moved = np.moveaxis(values, axis, 0)
    solved = np.linalg.solve(system, moved.reshape(n, -1)).reshape(moved.shape)
    return np.moveaxis(solved, 0, axis)


@dataclass(frozen=True, eq=False)
class SampledPSF:
    """A pixel-integrated PSF on a grid (see the module's docstring); a plane's values over the
    pixels of a centred spot sum to the share of the photons its window sees (1 at most)."""

    values: np.ndarray  # (Z, S, S) float64, S = 2 * oversample * (radius + 1) + 1, centre in the middle
    oversample: int  # grid points per pixel in u and v
    z_step: float  # nm between planes (1 where there is one plane)
    z_first: float  # the depth of plane 0, nm
    source: str = ""  # how it was made, for people: "pupil NA 1.49 ...", "beads", "movie"

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "values", values)
        if values.ndim != 3 or values.shape[1] != values.shape[2] or values.shape[0] < 1:
            raise PixelregError(f"a sampled PSF is (planes, S, S) values, got shape {values.shape}")
        side, k = values.shape[1], self.oversample
        if k < 4 or (side - 1) % (2 * k) or side < 6 * k + 1:
            raise PixelregError(
                f"a sampled PSF's side must be 2 * oversample * (radius + 1) + 1 with oversample >= 4 "
                f"and radius >= 2, got side {side}, oversample {k}"
            )
        if not np.isfinite(values).all():
            raise PixelregError("a sampled PSF holds NaN or infinite values")
        if not (self.z_step > 0 and math.isfinite(self.z_step) and math.isfinite(self.z_first)):
            raise PixelregError(f"a sampled PSF needs a z step above 0, got {self.z_step}")

    @property
    def radius(self) -> int:
        """Half-width in pixels of the windows it fills."""
        return (self.values.shape[1] - 1) // (2 * self.oversample) - 1

    @property
    def planes(self) -> int:
        return self.values.shape[0]

    @property
    def z_range(self) -> tuple[float, float]:
        return self.z_first, self.z_first + (self.planes - 1) * self.z_step

    @functools.cached_property
    def coefficients(self) -> torch.Tensor:
        """(Z, S + 2 pad, S + 2 pad) the B-spline coefficients that interpolate the samples, and
        zeros around them where a window reaches past the PSF (pad: REACH pixels and the taps)."""
        coefficients = self.values
        for axis in range(3):
            coefficients = _prefilter(coefficients, axis)
        pad = REACH * self.oversample + 2
        return torch.from_numpy(np.pad(coefficients, ((0, 0), (pad, pad), (pad, pad))))

    @functools.cached_property
    def coefficients32(self) -> torch.Tensor:
        """The coefficients in float32, for rendering."""
        return self.coefficients.float()

    def pixel_samples(self, z: float | None = None) -> np.ndarray:
        """(2r+1, 2r+1) the pixel values of a spot centred on a pixel at depth z (the middle plane's
        depth without one): what a camera records of it."""
        middle = sum(self.z_range) / 2 if z is None else z
        window = self.window(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([middle]), self.radius)
        return window[0][0].numpy()

    def widths(self, z: float) -> tuple[float, float]:
        """The spot's rms widths along x and y (px) at depth z, from its pixels' second moments
        within 3 px of the centre: what an astigmatic PSF turns with depth."""
        pixels = self.pixel_samples(z)
        middle = (len(pixels) - 1) // 2
        near = pixels[middle - 3 : middle + 4, middle - 3 : middle + 4].clip(min=0)
        steps = np.arange(-3, 4) ** 2
        light = max(float(near.sum()), 1e-12)
        return math.sqrt(float(near.sum(0) @ steps) / light), math.sqrt(float(near.sum(1) @ steps) / light)

    @functools.cached_property
    def tells_depth(self) -> bool:
        """Whether a spot's shape tells its depth, sign and all: the PSF's ellipticity
        (sigma_x - sigma_y over their mean) turns by more than ASTIGMATISM over its depths, as a
        cylindrical lens makes it. A symmetric PSF only tells how far from focus, not which side."""
        if self.planes < 3:
            return False
        ellipticity = [
            (sx - sy) / (sx + sy) * 2 for sx, sy in map(self.widths, np.linspace(*self.z_range, 9))
        ]
        return max(ellipticity) - min(ellipticity) > ASTIGMATISM

    def round_depth(self) -> float:
        """The depth (nm) nearest 0 where the spot is round (sigma_x = sigma_y), between the
        foci of an astigmatic PSF: the focal plane, where z = 0 belongs. 0 where there is none."""
        depths = np.linspace(*self.z_range, 8 * (self.planes - 1) + 1)
        turn = np.array([sx - sy for sx, sy in map(self.widths, depths)])
        crossings = np.nonzero(np.sign(turn[:-1]) * np.sign(turn[1:]) < 0)[0]
        if not len(crossings):
            return 0.0
        i = crossings[np.argmin(np.abs(depths[crossings]))]
        return float(depths[i] - turn[i] * (depths[i + 1] - depths[i]) / (turn[i + 1] - turn[i]))

    def gaussian_sigma(self, z: float | None = None) -> float:
        """The sigma (px) of the pixel-integrated Gaussian that fits the pixels of a centred spot at
        depth z best (least squares): the PSF's Gaussian-equivalent width. (Its second moment
        would not do: a pupil's rings make that grow with the window.)"""
        return best_gaussian(self.pixel_samples(z))[0]

    def window(
        self,
        points: torch.Tensor,
        z: torch.Tensor,
        radius: int,
        derivatives: bool = False,
        middles: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(M, 2r+1, 2r+1) the shares of each spot's photons in the window of pixels around its
        pixel (`fit.psf.windows_around`'s windows), for spots at `points` (M, 2) at depths `z`
        (M,) nm, in float32; with `derivatives`, in float64 and with d share / d (x, y, z)
        (M, 2r+1, 2r+1, 3). `middles` (M, 2): the windows' middle pixels where they stay put
        while the spots move (a fit); a spot is held within REACH px of its window's middle."""
        if radius > self.radius:
            raise PixelregError(f"the PSF reaches {self.radius} px, a window of {radius} px was asked")
        points = points.to(torch.float64).reshape(-1, 2)
        z = z.to(torch.float64).reshape(-1)
        middles = torch.floor(points + 0.5) if middles is None else middles.to(torch.float64).reshape(-1, 2)
        offsets = (points - middles).clamp(-REACH, REACH)
        parts = [
            self._window(offsets[start : start + MOST_SPOTS_AT_ONCE], z[start : start + MOST_SPOTS_AT_ONCE], radius, derivatives)
            for start in range(0, len(points), MOST_SPOTS_AT_ONCE)
        ]  # fmt: skip
        if not parts:
            side = 2 * radius + 1
            return torch.zeros(0, side, side, dtype=torch.float64), (
                torch.zeros(0, side, side, 3, dtype=torch.float64) if derivatives else None
            )
        values = torch.cat([part[0] for part in parts])
        jac = torch.cat([part[1] for part in parts]) if derivatives else None  # type: ignore[misc]
        return values, jac

    def _window(
        self, offsets: torch.Tensor, z: torch.Tensor, radius: int, derivatives: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        k, centre = self.oversample, (self.coefficients.shape[1] - 1) // 2
        steps = torch.arange(-radius, radius + 1) * k  # (W,) grid steps from pixel to pixel
        taps = torch.arange(-1, 3)  # (4,)
        # the grid coordinate of the window's middle pixel, seen from each spot `offsets` away from it
        grid = centre - k * offsets  # (M, 2)
        floor = torch.floor(grid)
        wx, sx = _spline_weights(grid[:, 0] - floor[:, 0])
        wy, sy = _spline_weights(grid[:, 1] - floor[:, 1])
        top = self.planes - 1
        depth = ((z - self.z_first) / self.z_step).clamp(0, top)
        z_floor = torch.floor(depth).clamp(max=max(top - 1, 0))
        wz, sz = _spline_weights(depth - z_floor)
        planes = z_floor.long()[:, None] + taps  # (M, 4), mirrored at both ends (one plane: 0)
        planes = (top - (top - planes.abs()).abs()).clamp(min=0)
        cols = floor[:, 0].long()[:, None, None] + taps[None, :, None] + steps[None, None, :]  # (M, 4, W)
        rows = floor[:, 1].long()[:, None, None] + taps[None, :, None] + steps[None, None, :]
        side = self.coefficients.shape[-1]
        flat = (planes[:, :, None, None, None, None] * side + rows[:, None, :, None, :, None]) * side + cols[
            :, None, None, :, None, :
        ]  # (M, 4z, 4y, 4x, W, W) places of the taps in the coefficients
        if not derivatives:  # rendering: float32 sums of products, a third of einsum's time
            taken = self.coefficients32.reshape(-1).take(flat)
            taken = (taken * wz.float()[:, :, None, None, None, None]).sum(1)
            taken = (taken * wx.float()[:, None, :, None, None]).sum(2)
            return (taken * wy.float()[:, :, None, None]).sum(1), None
        taken = self.coefficients.reshape(-1).take(flat)
        along_z = torch.einsum("mabcij,ma->mbcij", taken, wz)
        values = torch.einsum("mbcij,mb,mc->mij", along_z, wy, wx)
        # d grid / d x = -k; d depth / d z = 1 / z_step (0 beyond the planes, where depth is clamped)
        inside = ((z - self.z_first) / self.z_step >= 0) & ((z - self.z_first) / self.z_step <= top)
        by_z = torch.zeros_like(values)
        if top > 0:
            slope_z = torch.einsum(
                "mabcij,ma->mbcij", taken, sz * (inside.to(sz.dtype) / self.z_step)[:, None]
            )
            by_z = torch.einsum("mbcij,mb,mc->mij", slope_z, wy, wx)
        by_x = -k * torch.einsum("mbcij,mb,mc->mij", along_z, wy, sx)
        by_y = -k * torch.einsum("mbcij,mb,mc->mij", along_z, sy, wx)
        return values, torch.stack([by_x, by_y, by_z], -1)

    def save(self, path: str | Path) -> Path:
        """Write the PSF as .npz to a temporary name and move it into place."""
        from pixelreg.io.files import write_atomic

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    format=np.array(PSF_FORMAT),
                    values=self.values,
                    oversample=np.array(self.oversample),
                    z_step=np.array(self.z_step),
                    z_first=np.array(self.z_first),
                    source=np.array(self.source),
                )

        return write_atomic(path, write)

    @staticmethod
    def load(path: str | Path) -> SampledPSF:
        """The PSF a `psf.npz` holds, checked; one `Error:` line for anything else."""
        return _load_psf(str(Path(path).resolve()), _stamp(path))


def _stamp(path: str | Path) -> tuple[int, int]:
    """The file's size and modification time: a changed file is read again."""
    from pixelreg.io.files import require_file

    stat = require_file(path, "PSF file").stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _load_psf(path: str, stamp: tuple[int, int]) -> SampledPSF:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != PSF_FORMAT:
                raise PixelregError(f"{path} is not a pixelreg PSF (format {str(data['format'])!r})")
            return SampledPSF(
                values=np.array(data["values"], dtype=np.float64),
                oversample=int(data["oversample"]),
                z_step=float(data["z_step"]),
                z_first=float(data["z_first"]),
                source=str(data["source"]),
            )
    except PixelregError as exc:
        raise PixelregError(f"{path}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise PixelregError(f"{path} is not a pixelreg PSF file ({exc})") from None


# --- the scalar pupil-function PSF --------------------------------------------------------------


def _noll(j: int) -> tuple[int, int]:
    """Zernike (n, m) of Noll index j (1: piston, 4: defocus, 5 and 6: astigmatism, 11: spherical)."""
    n = 0
    while j > (n + 1) * (n + 2) // 2:
        n += 1
    row = j - n * (n + 1) // 2 - 1  # 0-based place within order n, |m| rising in pairs
    m = 2 * ((row + 1) // 2) if n % 2 == 0 else 2 * (row // 2) + 1
    return n, (m if j % 2 == 0 or m == 0 else -m)


def zernike(j: int, rho: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Noll-normalised Zernike polynomial j on the unit disc (rms 1 over it)."""
    n, m = _noll(j)
    radial = np.zeros_like(rho)
    for s in range((n - abs(m)) // 2 + 1):
        coefficient = (-1) ** s * math.factorial(n - s)
        coefficient /= (
            math.factorial(s) * math.factorial((n + abs(m)) // 2 - s) * math.factorial((n - abs(m)) // 2 - s)
        )
        radial += coefficient * rho ** (n - 2 * s)
    if m == 0:
        return math.sqrt(n + 1) * radial
    angular = np.cos(m * phi) if m > 0 else np.sin(-m * phi)
    return math.sqrt(2 * (n + 1)) * radial * angular


@dataclass(frozen=True)
class Optics:
    """What a scalar pupil PSF is made of."""

    na: float = 1.49  # numerical aperture
    wavelength: float = 680.0  # emission wavelength, nm
    refractive_index: float = 1.518  # of the immersion medium (and sample)
    pixel_size: float = 100.0  # nm in the sample per camera pixel
    aberrations: tuple[tuple[int, float], ...] = ()  # (Noll index, rms in wavelengths)

    def check(self) -> None:
        if not 0 < self.na < self.refractive_index:
            raise PixelregError(f"NA must be above 0 and below the refractive index, got {self.na:g}")
        if not (200 <= self.wavelength <= 2000 and 10 <= self.pixel_size <= 10_000):
            raise PixelregError("wavelength must be 200 to 2000 nm and pixel size 10 to 10000 nm")


def pupil_intensity(
    optics: Optics, z: float, grid: int, step: float, shift: tuple[float, float] = (0, 0)
) -> np.ndarray:
    """(grid, grid) the scalar PSF's intensity at depth z nm, sampled every `step` nm around the
    image's middle sample (an emitter displaced by `shift` nm), summing to 1 over the plane:
    |F[circ(NA / lambda) exp(i 2 pi (z kz + aberrations) + i 2 pi k . shift)]|^2."""
    freq = np.fft.fftfreq(grid, d=step)  # cycles per nm
    fx, fy = np.meshgrid(freq, freq)
    cutoff = optics.na / optics.wavelength
    rho2 = fx**2 + fy**2
    pupil = rho2 <= cutoff**2
    kz = np.sqrt(np.clip((optics.refractive_index / optics.wavelength) ** 2 - rho2, 0, None))
    phase = z * kz - (fx * shift[0] + fy * shift[1])
    rho, phi = np.sqrt(rho2) / cutoff, np.arctan2(fy, fx)
    for j, amount in optics.aberrations:
        phase = phase + amount * zernike(j, rho, phi)
    field = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(2j * np.pi * phase)))
    intensity = np.abs(field) ** 2
    return intensity / intensity.sum()


def pupil_psf(
    optics: Optics, z_values: np.ndarray, radius: int = 8, oversample: int = 4, grid: int = 1024
) -> SampledPSF:
    """The scalar pupil PSF at the depths `z_values` (evenly spaced, nm), integrated over pixels
    exactly (its intensity is band-limited: the pixel's box is a product of sincs in Fourier
    space) and sampled `oversample` times per pixel."""
    optics.check()
    z_values = np.asarray(z_values, dtype=np.float64)
    step = optics.pixel_size / oversample
    if grid * step < 4 * (radius + 1) * optics.pixel_size:
        raise PixelregError("the pupil's grid is too small for the PSF's radius")
    freq = np.fft.fftfreq(grid) * oversample  # cycles per pixel
    box = np.outer(np.sinc(freq), np.sinc(freq))  # the pixel's area, in Fourier space
    half = oversample * (radius + 1)
    planes = []
    for z in z_values:
        intensity = pupil_intensity(optics, float(z), grid, step)
        integrated = np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(intensity)) * box).real
        integrated = np.fft.fftshift(integrated) * oversample**2  # per pixel, not per sample
        middle = grid // 2
        planes.append(integrated[middle - half : middle + half + 1, middle - half : middle + half + 1])
    z_step = float(z_values[1] - z_values[0]) if len(z_values) > 1 else 1.0
    source = f"pupil NA {optics.na:g}, {optics.wavelength:g} nm, n {optics.refractive_index:g}, {optics.pixel_size:g} nm pixels"
    return SampledPSF(np.stack(planes), oversample, z_step, float(z_values[0]), source)


# --- the astigmatic Gaussian of Huang et al. 2008 ----------------------------------------------


@dataclass(frozen=True)
class DefocusCurves:
    """The widths of an astigmatic Gaussian spot against depth (Huang et al., Science 2008):
    sigma_x,y(z) = sigma0 sqrt(1 + u^2 + a u^3 + b u^4), u = (z +/- focal_offset) / depth_of_focus:
    x is sharpest at z = -focal_offset and y at +focal_offset (nm), so a spot above focus
    (z > 0, away from the objective) is wide in x."""

    sigma0: float = 1.0  # px: the width at each axis's own focus
    focal_offset: float = 250.0  # nm: half the distance between the two foci
    depth_of_focus: float = 350.0  # nm
    a: float = 0.0
    b: float = 0.0

    def widths(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def width(u: np.ndarray) -> np.ndarray:
            return self.sigma0 * np.sqrt(np.clip(1 + u**2 + self.a * u**3 + self.b * u**4, 0.01, None))

        z = np.asarray(z, dtype=np.float64)
        return width((z + self.focal_offset) / self.depth_of_focus), width(
            (z - self.focal_offset) / self.depth_of_focus
        )


def astigmatic_gaussian_psf(
    curves: DefocusCurves, z_values: np.ndarray, radius: int = 6, oversample: int = 4
) -> SampledPSF:
    """The elliptical Gaussian of `curves`, integrated over pixels exactly (a product of erf
    differences along x and y) at the depths `z_values` (evenly spaced, nm), sampled
    `oversample` times per pixel."""
    z_values = np.asarray(z_values, dtype=np.float64)
    half = oversample * (radius + 1)
    offsets = np.arange(-half, half + 1) / oversample  # pixel centre - emitter, px
    erf = np.vectorize(math.erf)

    def along(sigma: float) -> np.ndarray:
        scale = sigma * math.sqrt(2)
        return 0.5 * (erf((offsets + 0.5) / scale) - erf((offsets - 0.5) / scale))

    sx, sy = curves.widths(z_values)
    planes = np.stack([np.outer(along(float(y)), along(float(x))) for x, y in zip(sx, sy, strict=True)])
    z_step = float(z_values[1] - z_values[0]) if len(z_values) > 1 else 1.0
    source = (
        f"astigmatic Gaussian, sigma0 {curves.sigma0:g} px, foci at +-{curves.focal_offset:g} nm, "
        f"depth of focus {curves.depth_of_focus:g} nm"
    )
    return SampledPSF(planes, oversample, z_step, float(z_values[0]), source)
