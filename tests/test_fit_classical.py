import math

import numpy as np
import pytest

from pixelreg.fit.bounds import crlb_px
from pixelreg.fit.classical import argmax_points, centroid_points, gaussian_fit_points
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.render import expected_image
from pixelreg.simulate.spec import DataSpec


def test_argmax_is_exact_on_clean_images():
    dataset = make_dataset(DataSpec(n=200, height=20, width=30))
    np.testing.assert_array_equal(argmax_points(dataset.images), dataset.points)


def test_argmax_finds_several_points():
    dataset = make_dataset(DataSpec(n=100, height=24, width=24, points=3, min_distance=4))
    found = argmax_points(dataset.images, k=3)
    as_sets = [sorted(map(tuple, pts.tolist())) for pts in found]
    assert as_sets == [sorted(map(tuple, pts.tolist())) for pts in dataset.points]


def test_noiseless_blurred_spot_is_recovered_by_centroid_and_fit():
    spec = DataSpec(n=50, height=32, width=32, blur=1.2, subpixel=True, brightness=2000, background=20)
    points = np.random.default_rng(0).uniform(8, 24, size=(50, 1, 2))
    images = np.clip(np.rint(expected_image(points, spec)), 0, 255).astype(np.uint8)
    centroid_error = np.abs(centroid_points(images, 1, spec) - points).max()
    fit_error = np.abs(gaussian_fit_points(images, 1, spec) - points).max()
    assert centroid_error < 0.1
    assert fit_error < 0.02  # only uint8 rounding separates data and model


def test_crlb_matches_the_closed_form_for_a_wide_spot():
    """sigma_x^2 = 8 pi s^4 noise^2 / B^2 per axis for a Gaussian spot in white noise."""
    spec = DataSpec(n=1, height=64, width=64, blur=3.0, noise=5.0, brightness=3000.0, background=10.0)
    bound = crlb_px(np.array([[[32.3, 31.7]]]), spec)
    s2 = 3.0**2 + 1 / 12  # pixel integration widens the spot by a unit box's variance
    closed_form = math.sqrt(2 * 8 * math.pi * s2**2 * 5.0**2 / 3000.0**2)
    assert bound == pytest.approx(closed_form, rel=0.01)


def test_gaussian_fit_sits_near_the_bound_under_noise():
    spec = DataSpec(
        n=600, height=32, width=32, blur=1.0, subpixel=True, noise=10.0, background=50.0, test_fraction=0.5
    )
    dataset = make_dataset(spec)
    fit = gaussian_fit_points(dataset.images, 1, spec)
    errors = np.linalg.norm(fit - dataset.points, axis=-1)
    found = errors <= 1.0  # a few noise blobs outshine the spot: a detection miss, not imprecision
    assert found.mean() > 0.98
    rmse_found = math.sqrt(np.mean(errors[found] ** 2))
    bound = crlb_px(dataset.points, spec)
    assert bound < rmse_found < 1.2 * bound
