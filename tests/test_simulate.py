import numpy as np
import pytest
import torch

from pixelreg.errors import PixelregError
from pixelreg.io.datasets import load_dataset, save_dataset
from pixelreg.simulate.coords import from_normalized, position_mask, to_normalized
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.render import expected_image, render
from pixelreg.simulate.spec import DataSpec


def test_render_lights_exactly_the_pixel_at_column_x_row_y():
    spec = DataSpec(n=1, height=10, width=20)
    image = render(np.array([[[7.0, 3.0]]], dtype=np.float32), spec)[0]
    assert image.shape == (10, 20)
    assert image[3, 7] == 255  # row y=3, column x=7
    assert image.sum() == 255


def test_every_image_has_its_point_at_the_argmax():
    dataset = make_dataset(DataSpec(n=500, height=12, width=30, seed=1))
    flat = dataset.images.reshape(len(dataset), -1).argmax(1)
    ys, xs = np.divmod(flat, 30)
    np.testing.assert_array_equal(np.stack([xs, ys], 1), dataset.points[:, 0])
    assert dataset.images.dtype == np.uint8 and dataset.points.dtype == np.float32


@pytest.mark.parametrize("size", [(50, 50), (30, 70)])
def test_normalisation_round_trips_and_maps_corners_to_0_and_1(size):
    height, width = size
    points = np.array([[0, 0], [width - 1, height - 1], [3.5, 7.25]], dtype=np.float32)
    uv = to_normalized(points, height, width)
    np.testing.assert_allclose(uv[:2], [[0, 0], [1, 1]])
    np.testing.assert_allclose(from_normalized(uv, height, width), points, rtol=1e-6)
    tensor = torch.from_numpy(points)
    np.testing.assert_allclose(to_normalized(tensor, height, width).numpy(), uv)


@pytest.mark.parametrize("holdout", ["random", "quadrant"])
def test_held_out_splits_share_no_position_with_train(holdout):
    dataset = make_dataset(DataSpec(n=3000, height=20, width=20, holdout=holdout))
    train = dataset.train_mask()
    for split in ("val", "test"):
        held = position_mask(dataset.points[dataset.split == split], 20, 20)
        assert held.any()
        assert not (held & train).any()


def test_quadrant_holdout_keeps_bottom_right_out_of_training():
    dataset = make_dataset(DataSpec(n=2000, height=20, width=20, holdout="quadrant"))
    train_points = dataset.points[dataset.split == "train", 0]
    in_quadrant = (train_points[:, 0] >= 10) & (train_points[:, 1] >= 10)
    assert not in_quadrant.any()
    test_points = dataset.points[dataset.split == "test", 0]
    assert ((test_points[:, 0] >= 10) & (test_points[:, 1] >= 10)).all()


def test_no_holdout_lets_test_repeat_training_positions():
    dataset = make_dataset(DataSpec(n=3000, height=20, width=20, holdout="none"))
    test = position_mask(dataset.points[dataset.split == "test"], 20, 20)
    assert (test & dataset.train_mask()).sum() > 0.5 * test.sum()


def test_split_sizes_follow_the_fractions():
    dataset = make_dataset(DataSpec(n=1000, val_fraction=0.2, test_fraction=0.1))
    assert [(dataset.split == s).sum() for s in ("train", "val", "test")] == [700, 200, 100]


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_dataset(DataSpec(n=200, seed=5)), make_dataset(DataSpec(n=200, seed=5))
    c = make_dataset(DataSpec(n=200, seed=6))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.points, c.points)


def test_save_and_load_round_trip(tmp_path):
    dataset = make_dataset(DataSpec(n=50, height=10, width=12, noise=3.0, blur=1.0, subpixel=True))
    path = save_dataset(tmp_path / "d.npz", dataset)
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.images, dataset.images)
    np.testing.assert_array_equal(loaded.points, dataset.points)
    np.testing.assert_array_equal(loaded.split, dataset.split)
    assert loaded.spec == dataset.spec
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]  # no temporary file left


def test_blurred_subpixel_spot_has_requested_total_and_centroid():
    spec = DataSpec(n=3, height=40, width=40, blur=1.3, subpixel=True, brightness=1000.0)
    points = np.array([[[20.3, 17.8]], [[11.5, 25.25]], [[30.0, 9.9]]])
    image = expected_image(points, spec)
    np.testing.assert_allclose(image.sum((1, 2)), 1000.0, rtol=1e-9)
    ys, xs = np.mgrid[0:40, 0:40]
    centroid = np.stack([(image * xs).sum((1, 2)), (image * ys).sum((1, 2))], 1) / 1000.0
    np.testing.assert_allclose(centroid, points[:, 0], atol=1e-9)


def test_several_points_keep_their_distance():
    dataset = make_dataset(DataSpec(n=300, height=20, width=20, points=3, min_distance=4.0))
    diff = dataset.points[:, :, None] - dataset.points[:, None]
    dist = np.linalg.norm(diff, axis=-1) + np.eye(3) * 99
    assert dist.min() >= 4.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n": 0}, "n must be at least 1"),
        ({"height": 4}, "height"),
        ({"val_fraction": 1.0}, "val_fraction must be"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "below 1"),
        ({"holdout": "diagonal"}, "holdout must be"),
        ({"noise": -1.0}, "noise must be"),
    ],
)
def test_impossible_specs_are_refused(changes, message):
    with pytest.raises(PixelregError, match=message):
        DataSpec(**changes)
