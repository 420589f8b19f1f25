"""3D: the astigmatic PSFs, the 3D model's maps and tables, the 3D ML fit and the challenge's 3D
scoring, each against an independent oracle (closed forms, another renderer, hand counts)."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from pixelreg.errors import PixelregError
from pixelreg.evaluate.depth import by_depth, score_3d
from pixelreg.evaluate.matching import pair_greedy
from pixelreg.fit.photometry import log_likelihood, poisson_fit_3d
from pixelreg.io.locs import COLUMNS_3D, Localizations
from pixelreg.io.tables import TableWriter, read_table
from pixelreg.nn.augment import crop_at_random, mirror_at_random
from pixelreg.nn.offsets import OffsetLocalizer
from pixelreg.nn.readout import read_depths
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.foreign import PUPIL_OPTICS, _pupil_spots
from pixelreg.simulate.psf import DefocusCurves, Optics, astigmatic_gaussian_psf, pupil_psf

CURVES = DefocusCurves(sigma0=1.1, focal_offset=250.0, depth_of_focus=350.0)
DEPTHS = np.arange(-600.0, 601.0, 50.0)


@pytest.fixture(scope="module")
def astigmatic():
    return astigmatic_gaussian_psf(CURVES, DEPTHS)


def _erf_line(offsets: np.ndarray, sigma: float) -> np.ndarray:
    scale = sigma * math.sqrt(2)
    return np.array([0.5 * (math.erf((u + 0.5) / scale) - math.erf((u - 0.5) / scale)) for u in offsets])


def test_the_astigmatic_gaussian_follows_its_defocus_curves_between_planes(astigmatic):
    """Off the grid and between planes, the spline gives the closed form's pixels (erf products
    at the curves' widths); a spot above focus is wide in x, below it wide in y."""
    for (x, y), z in (((10.3, 9.8), 130.0), ((10.0, 10.0), -415.0), ((9.6, 10.45), 0.0)):
        window, _ = astigmatic.window(torch.tensor([[x, y]], dtype=torch.float64), torch.tensor([z]), 5)
        sx, sy = (float(w) for w in CURVES.widths(np.array(z)))
        steps = np.arange(-5, 6)
        cx, cy = np.floor(x + 0.5), np.floor(y + 0.5)
        expected = np.outer(_erf_line(cy + steps - y, sy), _erf_line(cx + steps - x, sx))
        assert np.abs(window[0].numpy() - expected).max() < 3e-3 * expected.max()
    wide_x, wide_y = astigmatic.widths(300.0), astigmatic.widths(-300.0)
    assert wide_x[0] > 1.3 * wide_x[1] and wide_y[1] > 1.3 * wide_y[0]
    assert astigmatic.tells_depth and astigmatic.round_depth() == pytest.approx(0.0, abs=5.0)


def test_a_symmetric_psf_does_not_tell_depth_and_a_cylindrical_lens_does():
    plain = pupil_psf(Optics(), np.arange(-400.0, 401.0, 100.0), radius=6, grid=512)
    lens = pupil_psf(Optics(aberrations=((6, -0.12),)), np.arange(-400.0, 401.0, 100.0), radius=6, grid=512)
    assert not plain.tells_depth and lens.tells_depth
    assert abs(lens.round_depth()) < 20.0  # astigmatism alone: round in the focal plane
    psf = astigmatic_gaussian_psf(DefocusCurves(1.1, 250.0, 350.0), DEPTHS)
    shifted = dataclasses.replace(psf, z_first=psf.z_first + 80.0)  # the same planes, labelled 80 nm deeper
    assert shifted.round_depth() == pytest.approx(80.0, abs=5.0)


def test_the_foreign_renderers_cylindrical_lens_is_the_pupils_noll_6():
    """Two implementations of one optics: pixelreg's FFT pupil with Zernike Noll 6 and the
    foreign matrix Fourier transform with its own astigmatism term."""
    psf = pupil_psf(Optics(aberrations=((6, -0.12),)), np.array([-250.0, 0.0, 250.0]), radius=8, grid=512)
    for point, z in (((20.2, 19.7), 250.0), ((20.0, 20.4), -250.0)):
        theirs, _ = _pupil_spots(
            np.array([point]), np.array([z]), {**PUPIL_OPTICS, "astigmatism": -0.12}, half=8
        )
        ours, _ = psf.window(torch.tensor([point], dtype=torch.float64), torch.tensor([z]), 8)
        assert np.abs(ours[0].numpy() - theirs[0]).max() < 0.01 * theirs.max()


def test_the_3d_ml_fit_finds_each_spots_depth(astigmatic):
    """Noise-free astigmatic spots at known depths: the fit from three starting depths returns
    the truth, and the truth is the likeliest of the fits."""
    camera = Camera()
    size, depths = 24, np.array([-450.0, -200.0, 0.0, 180.0, 420.0])
    points = np.array([[[11.3, 12.2]]] * len(depths))
    images = np.full((len(depths), size, size), 20.0)
    from pixelreg.simulate.render import add_sampled_spots

    add_sampled_spots(images, points, np.full((len(depths), 1), 3000.0), depths[:, None], astigmatic)
    start = points + 0.3
    fitted = poisson_fit_3d(images, start, np.full((5, 1), 1000.0), np.full((5, 1), 10.0), astigmatic, camera)
    assert np.abs(fitted[:, 0, 4] - depths).max() < 2.0
    assert np.abs(fitted[:, 0, :2] - points[:, 0]).max() < 0.01
    truth = np.concatenate(
        [points, np.full((5, 1, 1), 3000.0), np.full((5, 1, 1), 20.0), depths[:, None, None]], -1
    )
    mirrored = truth.copy()
    mirrored[..., 4] = -depths[:, None]
    assert (
        log_likelihood(images, start, truth, camera, astigmatic)
        >= log_likelihood(images, start, mirrored, camera, astigmatic)
    ).all()


def test_pairs_in_3d_need_both_tolerances_and_score_as_the_challenge():
    true = np.array([[[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]])
    true_z = np.array([[0.0, 100.0, -200.0]])
    pred = np.array([[[10.5, 10.0], [20.0, 21.0], [30.0, 30.0], [40.0, 40.0]]])
    pred_z = np.array([[30.0, 700.0, -160.0, 0.0]])  # the second is 600 nm off: no pair
    assert pair_greedy(pred, true, 2.5, (pred_z, true_z)).tolist() == [[0, -1, 2]]
    assert pair_greedy(pred, true, 2.5).tolist() == [[0, 1, 2]]  # laterally alone, it pairs
    row, pairs = score_3d(pred, pred_z, true, true_z)
    assert (row["tp"], row["fp"], row["fn"]) == (2, 2, 1)
    assert row["jaccard"] == pytest.approx(100 * 2 / 5)
    assert row["rmse_lateral_nm"] == pytest.approx(math.sqrt((50.0**2 + 0.0) / 2), abs=0.01)
    assert row["rmse_axial_nm"] == pytest.approx(math.sqrt((30.0**2 + 40.0**2) / 2), abs=0.01)
    axial = math.sqrt((30.0**2 + 40.0**2) / 2)
    assert row["efficiency_axial"] == pytest.approx(100 - math.hypot(60.0, 0.5 * axial), abs=0.01)
    bound = np.zeros((1, 3, 5))
    bound[..., 0] = bound[..., 1] = 0.1
    bound[..., 4] = 20.0
    rows = by_depth(pairs, bound, (-300.0, 100.0))
    assert [r["z_nm"] for r in rows] == [-150.0, 50.0]
    assert rows[0]["bias_z_nm"] == pytest.approx(40.0) and rows[1]["bias_z_nm"] == pytest.approx(30.0)
    assert rows[1]["axial_over_bound"] == pytest.approx(30.0 / 20.0)


def test_a_3d_model_reads_the_depth_its_pixels_predict():
    model = OffsetLocalizer(32, 32, counting=True, z_range=[-500.0, 500.0])
    assert model.maps == 7 and not model.mirror
    out = torch.full((1, 7, 32, 32), -20.0)
    out[0, 0, 10, 12] = 5.0  # a sure detection at pixel (12, 10), pointing at (12.2, 9.9)
    out[0, 1, 10, 12], out[0, 2, 10, 12] = 0.2, -0.1
    out[0, 5, 10, 12], out[0, 6, 10, 12] = 0.4, math.log(0.05)
    out[0, 5] = torch.where(
        out[0, 0] > 0, out[0, 5], torch.full_like(out[0, 5], -0.9)
    )  # the others elsewhere
    depth = read_depths(out, torch.tensor([[[12.2, 9.9], [math.nan, math.nan]]]), 0.0, 500.0)
    assert depth[0, 0].tolist() == pytest.approx([200.0, 25.0], abs=0.5)
    assert torch.isnan(depth[0, 1]).all()
    with pytest.raises(PixelregError, match="depth range"):
        OffsetLocalizer(32, 32, counting=False, z_range=[-500.0, 500.0])


def test_augmentation_carries_each_spots_depth_along():
    torch.manual_seed(0)
    images = torch.rand(8, 1, 40, 40)
    points = torch.tensor([[[5.0, 30.0, -120.0], [math.nan, math.nan, 80.0]]] * 8)
    mirrored_images, mirrored = mirror_at_random(images, points)
    assert (mirrored[:, 0, 2] == -120.0).all()
    for image, original, point in zip(mirrored_images, images, mirrored[:, 0], strict=True):
        assert image[0, int(point[1]), int(point[0])] == original[0, 30, 5]  # the spot's pixel moved with it
    cropped, moved, _ = crop_at_random(images, points, 32, 4)
    inside = torch.isfinite(moved[:, 0, 0])
    assert (moved[inside, 0, 2] == -120.0).all()
    assert torch.isnan(moved[:, 1, :2]).all()


def test_a_3d_table_writes_and_reads_its_depths():
    table = Localizations.from_fields(
        "movie.tif", COLUMNS_3D, frame=np.array([0, 2]), x=np.array([1.5, 2.0]), y=np.array([3.0, 4.25]),
        z=np.array([-123.4567, 250.0]), uncertainty_z=np.array([12.5, 30.0]),
    )  # fmt: skip
    for form in ("csv", "thunderstorm"):
        stream = io.StringIO()
        writer = TableWriter(stream, form, 100.0, COLUMNS_3D)
        writer.start_file("movie.tif", 3)
        writer.write(table)
        header = stream.getvalue().splitlines()[0]
        assert ("z,uncertainty_z" in header) if form == "csv" else ('"z [nm]","uncertainty_z [nm]"' in header)
        path = f"/tmp/pixelreg-test-3d-{form}.csv"
        with open(path, "w") as handle:
            handle.write(stream.getvalue())
        back = read_table(path)
        assert back["z"].tolist() == pytest.approx([-123.4567, 250.0])
        assert back["uncertainty_z"].tolist() == pytest.approx([12.5, 30.0])
        assert back["x"].tolist() == pytest.approx([1.5, 2.0])
