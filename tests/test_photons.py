"""The camera model, the Fisher bound under photon noise, and the Poisson maximum-likelihood fit,
each against an independent oracle: closed forms, sample moments, the bound itself."""

import math

import numpy as np
import pytest

from pixelreg.camera import Camera
from pixelreg.data import DataSpec, make_dataset
from pixelreg.photons import (
    crlb,
    mortensen_ls_variance,
    mortensen_mle_variance,
    poisson_fit,
    thompson_variance,
)

CENTRE = np.array([[30.2, 30.3]])  # far from every edge of a 61x61 image
FREE_ALL = (True, True, True, True, False)


@pytest.mark.parametrize(
    "photons, background, sigma",
    [(1000, 0, 1.5), (1000, 10, 1.5), (300, 10, 1.06), (3000, 10, 1.06), (10_000, 100, 2.0)],
)
def test_the_exact_bound_meets_mortensen_where_his_formula_holds(photons, background, sigma):
    # a pixelated Gaussian on a wide window, position, photons and background all unknown
    bound = crlb(CENTRE, photons, background, sigma, Camera(), (61, 61), FREE_ALL)[0]
    assert bound[0] ** 2 == pytest.approx(mortensen_mle_variance(photons, background, sigma), rel=0.01)
    assert bound[1] ** 2 == pytest.approx(mortensen_mle_variance(photons, background, sigma), rel=0.01)
    # least squares never beats maximum likelihood
    assert mortensen_ls_variance(photons, background, sigma) > bound[0] ** 2


def test_thompson_holds_without_background_and_is_optimistic_with_it():
    dark = crlb(CENTRE, 2000, 0.0, 1.5, Camera(), (61, 61), FREE_ALL)[0, 0] ** 2
    assert dark == pytest.approx(thompson_variance(2000, 0.0, 1.5), rel=0.01)
    lit = crlb(CENTRE, 2000, 20.0, 1.5, Camera(), (61, 61), FREE_ALL)[0, 0] ** 2
    assert thompson_variance(2000, 20.0, 1.5) < 0.9 * lit


def test_em_gain_halves_the_information_and_read_noise_lowers_it():
    args = (CENTRE, 1000, 10, 1.2)
    plain = crlb(*args, Camera(), (61, 61))[0, 0]
    assert crlb(*args, Camera(em_gain=100, read_noise=50), (61, 61))[0, 0] ** 2 == pytest.approx(
        2 * plain**2, rel=0.01
    )  # the read noise is negligible behind a gain of 100
    assert crlb(*args, Camera(read_noise=3.0), (61, 61))[0, 0] > 1.05 * plain


@pytest.mark.parametrize(
    "camera",
    [
        Camera(qe=0.8, read_noise=1.5, e_per_adu=0.5, baseline=100),
        Camera(qe=0.9, em_gain=100, read_noise=50, e_per_adu=20, baseline=400),
    ],
)
def test_photons_read_back_have_the_mean_and_variance_of_the_camera_model(camera):
    rng = np.random.default_rng(0)
    expected = 40.0
    read_back = camera.photons(camera.expose(np.full(400_000, expected), rng)).astype(np.float64)
    quantum = camera.e_per_adu / camera.gain / camera.qe  # photons per ADU: rounding's share
    variance = (
        camera.excess_noise * expected / camera.qe + camera.read_variance / camera.qe**2 + quantum**2 / 12
    )
    assert read_back.mean() == pytest.approx(expected, rel=0.005)
    assert read_back.var() == pytest.approx(variance, rel=0.03)


def test_a_camera_image_is_uint16_with_its_baseline_under_the_background():
    spec = DataSpec(
        n=50, height=16, width=16, photons=2000, background_photons=5, blur=1.2, baseline=100, seed=1
    )
    dataset = make_dataset(spec)
    assert dataset.images.dtype == np.uint16
    assert np.median(dataset.images) == pytest.approx(105, abs=2)
    assert dataset.photometry is not None and (dataset.photometry.photons == 2000).all()


def test_the_poisson_fit_reaches_the_bound_unbiased():
    camera = Camera(read_noise=1.5, e_per_adu=0.5, baseline=100)
    spec = DataSpec(
        n=1500, height=15, width=15, photons=800, background_photons=10, blur=1.2, seed=3, holdout="none",
        read_noise=1.5, e_per_adu=0.5, baseline=100, val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    dataset = make_dataset(spec)
    true = dataset.points.astype(np.float64)
    start = true + np.random.default_rng(4).uniform(-0.4, 0.4, size=true.shape)
    photons = camera.photons(dataset.images)
    fitted = poisson_fit(photons, start, 500.0, 5.0, 1.2, camera)
    error = fitted[..., :2] - true
    bound = crlb(true, 800, 10, 1.2, camera, spec.size)
    assert np.sqrt((error**2).mean(axis=(0, 1))) == pytest.approx(
        np.sqrt((bound[..., :2] ** 2).mean(axis=(0, 1))), rel=0.1
    )
    assert np.abs(error.mean(axis=(0, 1))).max() < 3 * bound[..., 0].mean() / math.sqrt(len(true))
    photon_error = fitted[..., 2] - 800
    assert np.sqrt((photon_error**2).mean()) == pytest.approx(np.sqrt((bound[..., 2] ** 2).mean()), rel=0.15)
    assert fitted[..., 3].mean() == pytest.approx(10, rel=0.03)
