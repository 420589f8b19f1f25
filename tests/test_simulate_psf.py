"""The sampled PSF and the pupil PSF: against closed forms, against an independent renderer of the
same optics, and through rendering, the bound and the ML fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pixelreg.errors import PixelregError
from pixelreg.fit.bounds import crlb
from pixelreg.fit.photometry import poisson_fit
from pixelreg.fit.psf import integrated_gaussian
from pixelreg.simulate.foreign import PUPIL_OPTICS, _pupil_spots
from pixelreg.simulate.psf import Optics, SampledPSF, best_gaussian, pupil_psf, zernike
from pixelreg.simulate.render import Photometry, expected_image, render_with_truth
from pixelreg.simulate.spec import DataSpec, read_spec


def gaussian_psf(sigma: float, radius: int = 6, oversample: int = 4, planes: int = 3) -> SampledPSF:
    """A SampledPSF whose samples are the closed-form pixel-integrated Gaussian."""
    u = (np.arange(2 * oversample * (radius + 1) + 1) - oversample * (radius + 1)) / oversample
    line = integrated_gaussian(torch.tensor(0.0, dtype=torch.float64), torch.tensor(u), sigma)[0].numpy()
    return SampledPSF(np.stack([np.outer(line, line)] * planes), oversample, 100.0, -100.0)


@pytest.fixture(scope="module")
def pupil() -> SampledPSF:
    return pupil_psf(Optics(), np.arange(-300.0, 301.0, 50.0), radius=8, grid=512)


@pytest.fixture(scope="module")
def pupil_file(pupil, tmp_path_factory):
    return pupil.save(tmp_path_factory.mktemp("psf") / "psf.npz")


def test_the_spline_of_a_sampled_gaussian_is_the_closed_form_between_samples():
    psf, sigma, r = gaussian_psf(1.2), 1.2, 6
    points = torch.from_numpy(np.random.default_rng(0).uniform(10, 20, (300, 2)))
    values, jac = psf.window(points, torch.zeros(300), r, derivatives=True)
    centre = torch.floor(points + 0.5)
    xs = centre[:, 0, None, None] + torch.arange(-r, r + 1.0)[None, None, :]
    ys = centre[:, 1, None, None] + torch.arange(-r, r + 1.0)[None, :, None]
    gx, dgx, _ = integrated_gaussian(points[:, 0, None, None], xs, sigma)
    gy, dgy, _ = integrated_gaussian(points[:, 1, None, None], ys, sigma)
    assert (values - gx * gy).abs().max() < 1e-5  # of a peak of 0.10
    assert (jac[..., 0] - dgx * gy).abs().max() < 5e-5 and (jac[..., 1] - gx * dgy).abs().max() < 5e-5
    assert jac[..., 2].abs().max() < 1e-12  # every plane the same: no change with depth
    fast, _ = psf.window(points, torch.zeros(300), r)  # rendering's float32 path
    assert fast.dtype == torch.float32 and (fast.double() - values).abs().max() < 1e-6
    assert best_gaussian(psf.pixel_samples())[0] == pytest.approx(sigma, abs=2e-3)


def test_the_pupil_psf_is_integrated_over_pixels_exactly(pupil):
    """Against the foreign renderer's matrix Fourier transform at the emitter's own offset,
    averaged over 5 x 5 points a pixel: agreement to the precision of that average."""
    for point, z in (((20.0, 20.0), 0.0), ((20.3, 19.8), 120.0), ((20.49, 20.45), -75.0)):
        theirs, _ = _pupil_spots(np.array([point]), np.array([z]), PUPIL_OPTICS, half=8)
        ours, _ = pupil.window(torch.tensor([point], dtype=torch.float64), torch.tensor([z]), 8)
        assert np.abs(ours[0].numpy() - theirs[0]).max() < 0.01 * theirs.max()
        assert ours.sum().item() == pytest.approx(theirs.sum(), abs=2e-3)
    focus = pupil.pixel_samples(0.0)
    assert 0.9 < focus.sum() < 1.0  # rings beyond 8 px hold the rest
    assert pupil.gaussian_sigma(0.0) == pytest.approx(0.933, abs=0.01)  # 0.21 lambda / NA and the pixel
    assert pupil.gaussian_sigma(300.0) > 1.4 * pupil.gaussian_sigma(0.0)


def test_defocus_is_symmetric_and_astigmatism_swaps_the_axes():
    plain = pupil_psf(Optics(), np.array([-200.0, 0.0, 200.0]), radius=6, grid=512)
    assert np.allclose(plain.values[0], plain.values[2], atol=1e-9)
    astigmatic = pupil_psf(
        Optics(aberrations=((6, 0.1),)), np.array([-200.0, 0.0, 200.0]), radius=6, grid=512
    )
    below, above = astigmatic.values[0], astigmatic.values[2]
    middle = below.shape[0] // 2
    width = lambda line: float((line * (np.arange(len(line)) - middle) ** 2).sum() / line.sum())  # noqa: E731
    assert width(below[middle]) > 1.2 * width(below[:, middle])  # wide in x below focus ...
    assert width(above[:, middle]) > 1.2 * width(above[middle])  # ... and in y above it


def test_zernike_polynomials_are_orthonormal_over_the_disc():
    grid = (np.arange(801) - 400) / 400
    x, y = np.meshgrid(grid, grid)
    rho, phi = np.hypot(x, y), np.arctan2(y, x)
    disc = rho <= 1
    polynomials = [zernike(j, rho, phi)[disc] for j in range(1, 12)]
    gram = np.array([[np.mean(a * b) for b in polynomials] for a in polynomials])
    assert np.allclose(gram, np.eye(11), atol=0.02)


def test_rendering_through_the_psf_puts_each_spot_where_it_is(pupil_file, pupil):
    spec = DataSpec(
        height=32, width=32, photons=1000, background_photons=5, psf=str(pupil_file), z=50.0, blur=0.95
    )
    for x, y in ((15.0, 16.0), (15.37, 16.81), (15.5, 16.49)):
        light = Photometry(np.array([[1000.0]]), np.array([[0.95]]), np.array([5.0]), np.array([[50.0]]))
        image = expected_image(np.array([[[x, y]]]), spec, light)[0] - 5.0
        window, _ = pupil.window(torch.tensor([[x, y]], dtype=torch.float64), torch.tensor([50.0]), 8)
        assert image.sum() == pytest.approx(1000 * window.double().sum().item(), rel=1e-5)
        rows, cols = np.mgrid[:32, :32]
        inner = np.hypot(cols - x, rows - y) <= 12  # the centroid of a symmetric spot is its place
        assert (image[inner] * cols[inner]).sum() / image[inner].sum() == pytest.approx(x, abs=0.02)
        assert (image[inner] * rows[inner]).sum() / image[inner].sum() == pytest.approx(y, abs=0.02)


def test_the_ml_fit_of_the_psf_reaches_the_bound_without_phase_bias(pupil_file, pupil):
    spec = DataSpec(height=24, width=24, photons=2000, background_photons=10, read_noise=1.5, baseline=100,
                    psf=str(pupil_file), z=0.0, blur=0.95)  # fmt: skip
    rng = np.random.default_rng(1)
    n = 500
    points = rng.uniform(11.5, 12.5, (n, 1, 2))
    images, _ = render_with_truth(points, spec, rng)
    start = points + rng.normal(0, 0.2, points.shape)
    free = (True, True, True, True, False)
    fitted = poisson_fit(spec.camera.photons(images), start, np.full((n, 1), 1500.0), np.full((n, 1), 8.0), 0.0,
                         spec.camera, free, psf=pupil)  # fmt: skip
    errors = fitted[:, 0, :2] - points[:, 0]
    bound = crlb(points, 2000.0, 10.0, 1.0, spec.camera, spec.size, free, pupil, 0.0)[:, 0, :2]
    assert np.sqrt(np.mean(errors**2)) == pytest.approx(bound.mean(), rel=0.1)  # 0.026 px
    assert np.abs(errors.mean(0)).max() < 3 * bound.mean() / math.sqrt(n)
    phase = points[:, 0, 0] - np.floor(points[:, 0, 0] + 0.5)
    for low in (-0.5, 0.0):  # the halves of the pixel: a pull towards its centre would show
        half = (phase >= low) & (phase < low + 0.5)
        assert abs(errors[half, 0].mean()) < 0.006
    assert np.median(fitted[:, 0, 2]) == pytest.approx(2000, rel=0.02)


def test_a_spec_names_its_psf_beside_it_and_refuses_what_cannot_be(pupil_file, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "psf.npz").write_bytes(pupil_file.read_bytes())
    (tmp_path / "spec.json").write_text(
        json.dumps(
            {"spec": {"photons": 500.0, "blur": 1.0, "psf": "sub/psf.npz", "z": -100.0, "z_max": 100.0}}
        )
    )
    monkeypatch.chdir(tmp_path / "sub")  # read from elsewhere: the name is the spec's folder's
    spec = read_spec(tmp_path / "spec.json")
    assert spec.psf == str(tmp_path / "sub" / "psf.npz") and spec.sampled_psf is not None
    assert spec.middle_z == 0.0 and spec.equivalent_sigma == pytest.approx(0.933, abs=0.01)
    for values, message in (
        ({"photons": 500.0, "blur": 1.0, "z": 100.0}, "--z needs a measured PSF"),
        ({"blur": 1.0, "psf": str(pupil_file)}, "give --photons too"),
        (
            {"photons": 500.0, "blur": 1.0, "psf": str(pupil_file), "z": 0.0, "z_max": 900.0},
            "beyond the PSF's planes",
        ),
        ({"photons": 500.0, "blur": 1.0, "psf": str(tmp_path / "none.npz")}, "not found"),
    ):
        with pytest.raises(PixelregError, match=message):
            DataSpec(**values)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PixelregError, match="not a pixelreg PSF file"):
        SampledPSF.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", values=np.zeros((1, 57, 57)))
    with pytest.raises(PixelregError, match="not a pixelreg PSF file"):
        SampledPSF.load(tmp_path / "other.npz")
