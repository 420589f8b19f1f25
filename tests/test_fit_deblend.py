"""Joint fits of neighbouring detections: against the true positions they were rendered from."""

from __future__ import annotations

import math

import numpy as np

from pixelreg.fit.bounds import crlb_px
from pixelreg.fit.deblend import SpotShape, refine_detections, spot_shape
from pixelreg.simulate.render import render
from pixelreg.simulate.spec import DataSpec

SPEC = DataSpec(
    n=1, height=32, width=32, points=0, points_max=4, blur=1.0, noise=10.0, background=50.0, brightness=1000.0
)
SHAPE = spot_shape(SPEC)


def rendered(true: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 images of `true` (N, K, 2), NaN rows absent, in the spec's noise."""
    return render(true, SPEC.with_(n=len(true)), np.random.default_rng(seed))


def padded(rows: list[list[tuple[float, float]]], width: int = 4) -> np.ndarray:
    points = np.full((len(rows), width, 2), np.nan)
    for n, row in enumerate(rows):
        if row:
            points[n, : len(row)] = row
    return points


def found(points: np.ndarray) -> np.ndarray:
    """The present points of one image, sorted by x."""
    present = points[np.isfinite(points[:, 0])]
    return present[np.argsort(present[:, 0])]


def test_spot_shape_only_where_the_data_fixes_every_spot():
    assert SHAPE == SpotShape(brightness=1000.0, blur=1.0, background=50.0, noise=10.0)
    assert spot_shape(None) is None
    assert spot_shape(SPEC.with_(blur=0.0)) is None  # a spot in one pixel: nothing to fit
    assert spot_shape(SPEC.with_(noise=0.0)) is None
    assert spot_shape(SPEC.with_(blur_max=2.0)) is None  # each spot its own blur
    assert spot_shape(SPEC.with_(photons=1000.0)) is None  # photons counted: the camera model


LONE = [(4.2, 27.1), (27.6, 4.3), (26.9, 26.2)]  # spots far from the others: the brightness reference


def test_a_close_pair_seen_as_one_detection_is_split_into_two():
    true = padded([[(12.3, 15.6), (14.1, 15.2), *LONE]] * 6, width=6)  # 1.84 px apart: one blob
    images = rendered(true)
    merged = padded([[(13.2, 15.4), *LONE]] * 6, width=6)
    scores = np.tile([0.8, 0.9, 0.9, 0.9, 0.0, 0.0], (6, 1))
    points, confidence = refine_detections(images, merged, scores, SHAPE)
    for n in range(6):
        assert np.abs(found(points[n]) - found(true[n])).max() < 0.3
        # the added spot takes the confidence of the detection it came from
        assert sorted(confidence[n][np.isfinite(points[n, :, 0])]) == [0.8, 0.8, 0.9, 0.9, 0.9]


def test_spots_brighter_than_training_keep_the_networks_detections():
    """The fits hold the training data's brightness; spots twice as bright would look like pairs."""
    true = padded([[(12.3, 15.6), *LONE]] * 6)
    images = render(true, SPEC.with_(n=6, brightness=2000.0), np.random.default_rng(5))
    start = true + 0.05
    points, _ = refine_detections(images, start, np.ones((6, 4)), SHAPE)
    assert np.array_equal(np.isfinite(points[..., 0]).sum(1), [4] * 6)  # none added
    np.testing.assert_allclose(found(points[0]), found(start[0]), atol=1e-6)  # none moved


def test_a_pair_seen_as_three_detections_loses_the_extra_one():
    true = padded([[(10.4, 10.2), (12.9, 10.9), *LONE]] * 6, width=6)
    images = rendered(true, seed=1)
    three = padded([[(10.3, 10.1), (11.7, 10.6), (13.0, 11.0), *LONE]] * 6, width=6)
    points, _ = refine_detections(images, three, np.full((6, 6), 0.5), SHAPE)
    for n in range(6):
        assert np.abs(found(points[n]) - found(true[n])).max() < 0.3


def test_isolated_spots_are_placed_at_the_bound():
    """Started 0.3 px off, each lone spot is fitted to within the Cramér-Rao bound's rms."""
    rng = np.random.default_rng(2)
    true = np.full((300, 4, 2), np.nan)
    true[:, 0] = rng.uniform(6, 26, size=(300, 2))
    images = rendered(true, seed=3)
    start = true + rng.normal(0, 0.3, size=true.shape)
    points, _ = refine_detections(images, start, np.ones((300, 4)), SHAPE)
    rmse = math.sqrt(np.nanmean(((points[:, 0] - true[:, 0]) ** 2).sum(-1)))
    bound = crlb_px(true[:, :1], SPEC)
    assert bound * 0.85 < rmse < bound * 1.15


def test_no_detections_and_lone_spots_far_apart():
    images = rendered(padded([[], [(5.0, 5.0), (25.0, 25.0)]]))
    nothing = padded([[], []])
    points, confidence = refine_detections(images, nothing, np.zeros((2, 4)), SHAPE)
    assert points.shape[0] == 2 and np.isnan(points).all() and (confidence == 0).all()
    points, _ = refine_detections(images, padded([[], [(5.2, 4.9), (24.8, 25.1)]]), np.ones((2, 4)), SHAPE)
    assert np.isnan(points[0]).all()
    assert np.abs(found(points[1]) - [(5.0, 5.0), (25.0, 25.0)]).max() < 0.2
