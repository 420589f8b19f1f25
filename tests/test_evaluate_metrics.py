import numpy as np

from pixelreg.evaluate.matching import match_points
from pixelreg.evaluate.metrics import summarize


def test_summary_against_hand_computed_values():
    true = np.array([[[10.0, 10.0]], [[20.0, 5.0]], [[0.0, 0.0]], [[7.0, 7.0]]])
    pred = np.array([[[10.0, 10.0]], [[23.0, 9.0]], [[0.4, 0.0]], [[7.0, 7.6]]])
    m = summarize(pred, true, height=21, width=41)
    errors = np.array([0.0, 5.0, 0.4, 0.6])
    assert m["n"] == 4
    assert np.isclose(m["mean_px"], errors.mean())
    assert np.isclose(m["median_px"], np.median(errors))
    assert np.isclose(m["max_px"], 5.0)
    assert np.isclose(m["exact"], 0.5)  # 0.4 rounds back to 0; 7.6 rounds to 8
    expected_mse = np.mean(((pred - true) / np.array([40.0, 20.0])) ** 2)
    assert np.isclose(m["mse"], expected_mse)


def test_empty_group_has_zero_count_and_nulls():
    m = summarize(np.zeros((0, 1, 2)), np.zeros((0, 1, 2)), 10, 10)
    assert m["n"] == 0 and m["mean_px"] is None and m["exact"] is None


def test_matching_pairs_each_true_point_with_its_nearest_prediction():
    true = np.array([[[1.0, 1.0], [10.0, 10.0], [20.0, 0.0]]])
    pred = np.array([[[20.2, 0.1], [1.1, 0.9], [10.0, 10.5]]])
    matched = match_points(pred, true)
    np.testing.assert_allclose(matched, [[[1.1, 0.9], [10.0, 10.5], [20.2, 0.1]]])


def test_recall_and_rmse_of_hits_count_only_points_within_one_pixel():
    true = np.array([[[1.0, 1.0], [10.0, 10.0]], [[5.0, 5.0], [20.0, 20.0]]])
    pred = np.array([[[1.0, 1.2], [10.0, 11.5]], [[5.4, 5.0], [20.0, 20.0]]])  # errors 0.2, 1.5, 0.4, 0
    m = summarize(match_points(pred, true), true, 40, 40)
    assert m["recall_1px"] == 0.75
    assert np.isclose(m["rmse_hits_px"], np.sqrt((0.2**2 + 0.4**2 + 0.0) / 3))
    assert np.isclose(m["rmse_px"], np.sqrt((0.2**2 + 1.5**2 + 0.4**2) / 4))
    assert m["exact"] == 0.5  # 11.5 rounds to 12: the first image is not exact, the second is


def test_a_constant_offset_is_that_offset_in_every_phase_bin():
    from pixelreg.evaluate.metrics import PHASE_BINS, phase_bias

    true = np.random.default_rng(0).uniform(5, 40, size=(3000, 1, 2))
    offset = np.array([0.03, -0.02])
    bias = phase_bias(true, np.broadcast_to(offset, true.shape))
    assert bias.shape == (2, PHASE_BINS)
    np.testing.assert_allclose(bias, np.repeat(offset[:, None], PHASE_BINS, axis=1), atol=1e-12)
    assert summarize(true + offset, true, 50, 50)["bias_px"] == 0.03


def test_pixel_locking_shows_as_a_bias_against_the_phase():
    from pixelreg.evaluate.metrics import phase_bias, phase_centres, phase_of

    true = np.random.default_rng(1).uniform(5, 40, size=(5000, 1, 2))
    locked = true - phase_of(true)  # every estimate snapped to its pixel centre
    bias = phase_bias(true, locked - true)
    np.testing.assert_allclose(bias[0], -np.array(phase_centres()), atol=0.01)
    assert 0.44 < summarize(locked, true, 50, 50)["bias_px"] <= 0.5
