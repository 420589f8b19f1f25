"""The camera model, the Fisher bound under photon noise, and the Poisson maximum-likelihood fit,
each against an independent oracle: closed forms, sample moments, the bound itself."""

import json
import math

import numpy as np
import pytest
import torch

from pixelreg.errors import PixelregError
from pixelreg.fit.background import lower_median
from pixelreg.fit.bounds import crlb, mortensen_ls_variance, mortensen_mle_variance, thompson_variance
from pixelreg.fit.photometry import measure_spots, photometry_start, poisson_fit
from pixelreg.io.datasets import load_dataset, save_dataset
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import DataSpec

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 1000), (2, 5, 7), (4, 1)])
def test_the_background_median_is_torchs(shape, dtype):
    values = torch.poisson(torch.full(shape, 6.0)).to(dtype) / 2  # ties, as in counts
    assert torch.equal(lower_median(values), values.median(-1).values)
    values[0, ..., 0] = math.nan
    torch.testing.assert_close(lower_median(values), values.median(-1).values, rtol=0, atol=0, equal_nan=True)


def test_measured_photometry_is_the_general_fit_and_bound():
    # measure_spots with sigma known (float32 pixels, the spot's shape computed once) against the
    # general float64 path: photometry_start, poisson_fit of photons and background, crlb
    camera = Camera(read_noise=1.5, e_per_adu=0.5, baseline=100, em_gain=20)
    spec = DataSpec(
        n=3, height=40, width=40, points=6, photons=300, photons_max=3000, background_photons=10,
        blur=1.1, seed=5, holdout="none", read_noise=1.5, e_per_adu=0.5, baseline=100, em_gain=20,
        val_fraction=0.0, test_fraction=0.0,
    )  # fmt: skip
    dataset = make_dataset(spec)
    images = camera.photons(dataset.images)
    points = dataset.points.astype(np.float64) + np.random.default_rng(6).uniform(-0.3, 0.3, (3, 6, 2))
    points[0, 0] = (0.2, 39.4)  # a window cut by two edges
    points[1, 5] = np.nan  # padding
    found = measure_spots(images, points, 1.1, camera)
    where = np.nan_to_num(points)
    photons, background = photometry_start(images, where, 1.1)
    fitted = poisson_fit(
        images, where, photons, background, 1.1, camera, (False, False, True, True, False), 8
    )
    bound = crlb(
        where, fitted[..., 2], fitted[..., 3], 1.1, camera, (40, 40), (True, True, True, True, False)
    )
    present = np.isfinite(points[..., 0])
    assert (np.isfinite(found["uncertainty"]) == present).all()
    for measured, general in (
        (found["photons"], fitted[..., 2]),
        (found["background"], fitted[..., 3]),
        (found["uncertainty"], np.sqrt((bound[..., 0] ** 2 + bound[..., 1] ** 2) / 2)),
    ):
        np.testing.assert_allclose(measured[present], general[present], rtol=1e-4)
    assert (found["sigma"][present] == 1.1).all()


# --- the camera model from the command line ---------------------------------------------------

CAMERA = ["--photons", "500:4000", "--background-photons", "8", "--blur", "1.1"]
CAMERA += ["--read-noise", "1.5", "--e-per-adu", "0.5", "--baseline", "100", "--size", "16"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--photons", "1000", "--qe", "0"], "--qe must be in (0, 1], got 0"),
        (["--photons", "1000", "--qe", "1.2"], "--qe must be in (0, 1], got 1.2"),
        (["--photons", "1000", "--read-noise", "-1"], "--read-noise must be 0 to 1000 electrons rms, got -1"),
        (["--photons", "1000", "--e-per-adu", "1e-300"], "--e-per-adu must be 0.001 to 10000"),
        (["--photons", "1e308"], "--photons must be 0 to 1e+08, got 1e+308"),
        (["--photons", "1:inf"], "--photons must be 0 to 1e+08, got inf"),
        (["--photons", "1e-300"], "--photons must be 0 (grey levels) or at least 1"),
        (["--photons", "500", "--background-photons", "0:1e308"], "--background-photons must be 0 to 1e+08"),
        (["--photons", "500", "--blur", "1:1e308"], "--blur must be 0 to 50, got 1e+308"),
        (["--photons", "1000", "--baseline", "70000"], "--baseline must be 0 to 65534 ADU"),
        (["--photons", "1000", "--em-gain", "0.5"], "--em-gain must be 0 (no EM register) or 1 to 10000"),
        (["--photons", "1000", "--em-gain", "1e308"], "--em-gain must be 0 (no EM register) or 1 to 10000"),
        (["--photons", "3000:300"], "--photons 3000:300 is out of order"),
        (["--photons", "0:300"], "--photons LO:HI draws log-uniformly, so LO must be above 0"),
        (["--photons", "1000", "--blur", "0.1"], "the camera model renders spots of --blur 0.3 px or more"),
        (["--blur", "1:x"], "--blur must be a number or a range LO:HI, got '1:x'"),
    ],
)
def test_impossible_camera_options_get_one_error_line(run, tmp_path, args, message):
    for command in ("generate", "train"):
        result = run(command, *args, "--out", tmp_path / "out")
        assert result.exit_code == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_camera_run_reports_what_each_localization_is_worth(run, tmp_path):
    result = run("train", *CAMERA, "--n", 800, "--epochs", 2, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.stderr
    report = json.loads(run("evaluate", tmp_path / "train", "--json", "--quiet").stdout)
    photometry = report["photometry"]
    assert (
        set(photometry["methods"]) == {"model", "poisson_mle"} and "gaussian_fit" not in report["baselines"]
    )
    assert sum(photometry["deciles"]["spots"]) == 80  # every test spot in one decile
    fit = photometry["methods"]["poisson_mle"]
    # the ML fit is efficient: at the bound, its uncertainty calibrated, its photons right
    assert 0.8 < fit["rmse_over_bound"] < 1.25
    assert all(0.75 < v < 1.25 for v in fit["error_over_uncertainty_std"].values())
    assert fit["photons_rmse_relative"] < 2 * photometry["photons_bound_relative"]
    assert report["crlb"]["crlb_px"] == pytest.approx(photometry["bound_px"])
    # predict: the truth of a bright spot read back, and a lower baseline raises the background
    spec = DataSpec(n=1, height=16, width=16, photons=3000, background_photons=8, blur=1.1, read_noise=1.5,
                    e_per_adu=0.5, baseline=100, seed=9, holdout="none", val_fraction=0, test_fraction=0)  # fmt: skip
    frame = make_dataset(spec)
    np.save(tmp_path / "frame.npy", frame.images)
    rows = json.loads(run("predict", tmp_path / "train", tmp_path / "frame.npy", "--json").stdout)
    assert len(rows) == 1 and set(rows[0]) >= {"photons", "background", "uncertainty"}
    assert math.dist((rows[0]["x"], rows[0]["y"]), frame.points[0, 0]) < 0.5
    assert rows[0]["photons"] == pytest.approx(3000, rel=0.15) and rows[0]["background"] == pytest.approx(
        8, abs=1.5
    )
    absurd = run("predict", tmp_path / "train", tmp_path / "frame.npy", "--e-per-adu", "1e308")
    assert absurd.exit_code == 1 and absurd.stderr.startswith("Error: --e-per-adu must be 0.001 to 10000")
    lower = json.loads(
        run("predict", tmp_path / "train", tmp_path / "frame.npy", "--json", "--baseline", 90).stdout
    )
    assert lower[0]["background"] - rows[0]["background"] == pytest.approx(
        10 * 0.5, abs=0.05
    )  # 10 ADU of 0.5 e
    figures = run("plot", tmp_path / "train", "--quiet").stdout
    assert "uncertainty.png" in figures


def test_camera_settings_apply_to_camera_models_only(run, small_run, tmp_path):
    np.save(tmp_path / "grey.npy", np.zeros((16, 16), dtype=np.uint8))
    result = run("predict", small_run, tmp_path / "grey.npy", "--baseline", 90)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: --baseline applies to a model trained on camera images (--photons); this one reads grey levels"
    )


def test_a_camera_dataset_round_trips_and_its_damage_is_named(tmp_path):
    spec = DataSpec(
        n=20, height=12, width=12, photons=300, photons_max=900, background_photons=5, blur=1.0, seed=2
    )
    dataset = make_dataset(spec)
    save_dataset(tmp_path / "cam.npz", dataset)
    again = load_dataset(tmp_path / "cam.npz")
    assert again.images.dtype == np.uint16 and np.array_equal(again.images, dataset.images)
    assert np.allclose(again.photometry.photons, dataset.photometry.photons, rtol=1e-6)
    assert 300 <= again.photometry.photons.min() and again.photometry.photons.max() <= 900
    arrays = dict(np.load(tmp_path / "cam.npz"))
    for change, words in [
        ({"spec": np.asarray("null")}, "uint16 images need the stored spec of the camera model"),
        ({"photons": None}, "its spec varies the spots, but the file lacks their photons, sigma, background"),
        ({"images": dataset.images.astype(np.uint8)}, "images are uint8, but its spec describes uint16"),
        ({"photons": np.full_like(arrays["photons"], np.nan)}, "photons holds NaN or infinity"),
        ({"sigma": arrays["sigma"].astype(str)}, "sigma must be floats, got <U"),
    ]:
        damaged = {key: value for key, value in {**arrays, **change}.items() if value is not None}
        np.savez(tmp_path / "bad.npz", **damaged)
        with pytest.raises(PixelregError, match=words):
            load_dataset(tmp_path / "bad.npz")
