import numpy as np
import pytest
import torch

from pixelreg.errors import PixelregError
from pixelreg.nn.architectures import peaks_to_points, splat
from pixelreg.nn.registry import MODELS, build_model


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_predicts_points_in_pixels_and_has_a_finite_loss(name):
    torch.manual_seed(0)
    model = build_model(name, height=24, width=32)
    images = torch.rand(5, 1, 24, 32)
    points = torch.rand(5, 1, 2) * torch.tensor([31.0, 23.0])
    assert model.predict(images).shape == (5, 1, 2)
    assert torch.isfinite(model.loss(images, points))


@pytest.mark.parametrize("name", ["cnn", "coordconv"])
def test_fixed_size_models_refuse_other_sizes(name):
    model = build_model(name, height=24, width=24)
    with pytest.raises(PixelregError, match="24x24"):
        model.predict(torch.zeros(1, 1, 30, 30))


@pytest.mark.parametrize("name", ["cnn", "coordconv"])
def test_single_point_models_refuse_several_points(name):
    with pytest.raises(PixelregError, match="heatmap"):
        build_model(name, height=24, width=24, points=3)


def test_heatmap_takes_any_size():
    model = build_model("heatmap", height=24, width=24)
    assert model.predict(torch.zeros(2, 1, 40, 80)).shape == (2, 1, 2)


def test_readout_is_exact_for_a_sharp_peak_everywhere_including_corners():
    height, width = 9, 13
    ys, xs = np.divmod(np.arange(height * width), width)
    logits = torch.zeros(height * width, height * width)
    logits[torch.arange(height * width), torch.arange(height * width)] = 16.0  # one peak per map
    points = peaks_to_points(logits.reshape(-1, height, width), k=1, radius=2)
    np.testing.assert_allclose(points[:, 0].numpy(), np.stack([xs, ys], 1), atol=1e-4)


def test_readout_finds_several_separated_peaks():
    logits = torch.zeros(1, 20, 20)
    for x, y in [(3, 4), (15, 10), (8, 17)]:
        logits[0, y, x] = 10.0
    points = peaks_to_points(logits, k=3, radius=2)[0].numpy()
    assert sorted(map(tuple, points.round().astype(int).tolist())) == [(3, 4), (8, 17), (15, 10)]


def test_splat_target_has_unit_mass_and_the_point_as_its_mean():
    points = torch.tensor([[[3.25, 4.5]], [[0.0, 9.0]], [[9.0, 0.7]]])
    target = splat(points, 10, 10)
    np.testing.assert_allclose(target.sum((1, 2)).numpy(), 1.0, rtol=1e-6)
    mean_x = (target.sum(1) * torch.arange(10)).sum(1)
    mean_y = (target.sum(2) * torch.arange(10)).sum(1)
    np.testing.assert_allclose(torch.stack([mean_x, mean_y], 1).numpy(), points[:, 0].numpy(), atol=1e-5)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(PixelregError, match="unknown model 'resnet'"):
        build_model("resnet")


def test_the_registry_and_the_torch_free_names_agree():
    from pixelreg.nn.config import DEFAULT_MODEL, MODEL_NAMES

    assert tuple(MODELS) == MODEL_NAMES and DEFAULT_MODEL == "auto"


def test_auto_picks_the_heatmap_for_the_clean_task_and_offsets_otherwise():
    from pixelreg.nn.config import choose_model
    from pixelreg.simulate.spec import DataSpec

    assert choose_model("auto", DataSpec()) == "heatmap"
    for changes in ({"blur": 1.0}, {"noise": 5.0}, {"subpixel": True}):
        assert choose_model("auto", DataSpec(**changes)) == "offsets"
    assert choose_model("cnn", DataSpec(noise=5.0)) == "cnn"


def test_offsets_model_reads_a_known_offset_back():
    model = build_model("offsets", height=12, width=12)
    out = torch.zeros(1, 5, 12, 12)
    out[0, 0] = -30.0
    out[0, 0, 7, 3] = 30.0  # one sure detection, at column 3, row 7
    out[0, 1], out[0, 2] = 0.25, -0.125  # every pixel points 0.25 px right, 0.125 px up of itself
    assert model.read_points(out)[0, 0].tolist() == pytest.approx([3.25, 6.875], abs=1e-6)
    out[0, 0, 7, 4] = 30.0  # two equal detections side by side: their estimates are averaged
    assert model.read_points(out)[0, 0].tolist() == pytest.approx([3.75, 6.875], abs=1e-6)


def test_offsets_model_reads_an_image_and_its_mirror_image_alike():
    torch.manual_seed(0)
    model = build_model("offsets", height=10, width=13, channels=4).eval()
    images = torch.rand(2, 1, 10, 13)
    with torch.no_grad():
        out = model.mirrored_output(images)
        mirrored = model.mirrored_output(images.flip(-1)).flip(-1)
    mirrored[:, 1] *= -1  # seen in a mirror, a spot to the right is a spot to the left
    torch.testing.assert_close(mirrored, out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, 1], torch.zeros_like(out[:, 1]))  # not trivially zero
