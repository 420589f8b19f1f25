"""`pixelreg calibrate`: the imaging parameters of movies that other renderers made (their truth
the oracle), the spec it writes trained on, and the clear errors and warnings of bad stacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from pixelreg.bench.calibration import same_spots, score_method, spot_bounds
from pixelreg.fit.calibrate import calibrate
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.foreign import render_smlm, render_stars
from pixelreg.simulate.spec import DataSpec


@pytest.fixture(scope="module")
def stars():
    return render_stars(frames=40, size=96, n_stars=14, seed=2)


def test_a_star_field_on_an_scmos_is_calibrated_to_its_truth(stars):
    found = calibrate(stars.frames)
    truth, value = stars.truth, {name: e.value for name, e in found.estimates.items()}
    assert found.warnings == []
    assert value["e_per_adu"] == pytest.approx(truth["e_per_adu"], rel=0.05)
    assert value["baseline"] == pytest.approx(truth["baseline"], abs=1.0)
    assert value["blur"] == pytest.approx(truth["sigma"], rel=0.05)
    assert value["read_noise"] == pytest.approx(truth["read_noise"], rel=0.3)
    # the training ranges hold the truth's, without reaching far past it
    assert truth["photons_min"] / 2 < found.spec.photons <= truth["photons_min"]
    assert truth["photons_max"] <= found.spec.photons_max < 2 * truth["photons_max"]
    assert found.spec.background_photons == pytest.approx(truth["background_min"], abs=1.5)
    assert found.spec.background_photons_max == pytest.approx(truth["background_max"], abs=1.5)
    assert value["spots_per_frame"] == pytest.approx(truth["spots_per_frame"], rel=0.2)


def test_an_emccd_movie_is_calibrated_given_its_em_gain():
    movie = render_smlm(frames=60, size=96, seed=3)
    found = calibrate(movie.frames, em_gain=100.0)
    value = {name: e.value for name, e in found.estimates.items()}
    assert value["e_per_adu"] == pytest.approx(movie.truth["e_per_adu"], rel=0.05)
    assert value["blur"] == pytest.approx(movie.truth["sigma"], rel=0.05)
    # the baseline within 3 photons of a background of 30 to 60: found as k1 - k3 / (6 theta^2),
    # it moves by 2% of the background's ADU for each 1% of theta (which a network never sees:
    # it reads each frame less its background level)
    assert value["baseline"] == pytest.approx(movie.truth["baseline"], abs=3 * 100 / 12)
    assert found.spec.em_gain == 100.0


def test_an_even_background_gives_the_gain_from_higher_cumulants():
    """No range of background levels for a mean-variance line: k4 / k3 tells the gain."""
    spec = DataSpec(n=200, height=96, width=96, points=3, points_max=8, photons=300.0, photons_max=3000.0,
                    background_photons=10.0, blur=1.0, read_noise=1.5, e_per_adu=0.5, baseline=100.0,
                    holdout="none", val_fraction=0.0, test_fraction=0.0, seed=5)  # fmt: skip
    found = calibrate(make_dataset(spec).images)
    gain = found.estimates["e_per_adu"]
    assert gain.how == "estimated" and "k4 / k3" in gain.note
    assert gain.value == pytest.approx(0.5, rel=0.15)
    assert found.estimates["baseline"].value == pytest.approx(100.0, abs=3.0)


def test_given_values_are_used_as_they_are(stars):
    found = calibrate(stars.frames, baseline=990.0, e_per_adu=2.5)
    assert found.estimates["baseline"].how == found.estimates["e_per_adu"].how == "given"
    assert (found.spec.baseline, found.spec.e_per_adu) == (990.0, 2.5)


@pytest.mark.slow
def test_calibrate_writes_a_spec_that_train_takes_and_a_figure(run, stars, tmp_path):
    tifffile.imwrite(tmp_path / "stars.tif", stars.frames)
    result = run("calibrate", tmp_path / "stars.tif", "--out", tmp_path / "spec.json", "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["path"] == str(tmp_path / "spec.json") and (tmp_path / "spec.png").stat().st_size > 10_000
    spec = json.loads((tmp_path / "spec.json").read_text())["spec"]  # beside the estimates and twin
    assert spec["e_per_adu"] == pytest.approx(2.0, rel=0.05) and spec["points"] == 0
    trained = run("train", "--spec", tmp_path / "spec.json", "--n", 64, "--epochs", 1, "--stride", 2,
                  "--out", tmp_path / "run", "--quiet")  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    predicted = run(
        "predict", tmp_path / "run" / "train", tmp_path / "stars.tif", "--out", tmp_path / "locs.csv"
    )
    assert predicted.exit_code == 0, predicted.stderr
    assert (tmp_path / "locs.csv").read_text().startswith("path,index,x,y,confidence,photons")


def test_bad_stacks_get_an_error_or_a_warning_that_names_the_default(run, stars, tmp_path):
    rng = np.random.default_rng(0)
    dark = (100 + rng.normal(0, 2, (30, 64, 64))).astype(np.uint16)  # noise, no spot anywhere
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    result = run("calibrate", tmp_path / "dark.tif", "--out", tmp_path / "dark.json", "--quiet")
    assert result.exit_code == 1 and result.stderr.startswith("Error: no spots found")
    assert not (tmp_path / "dark.json").exists() and not (tmp_path / "dark.png").exists()
    burnt = stars.frames.copy()
    burnt[:, :, :40] = 65535  # the camera saturated over a third of the field
    tifffile.imwrite(tmp_path / "burnt.tif", burnt)
    result = run("calibrate", tmp_path / "burnt.tif", "--out", tmp_path / "burnt.json", "--quiet")
    assert result.exit_code == 1 and "saturated" in result.stderr and result.stderr.count("\n") == 1
    tifffile.imwrite(tmp_path / "short.tif", stars.frames[:5])
    result = run("calibrate", tmp_path / "short.tif", "--out", tmp_path / "short.json", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "Warning: e-per-adu: not measured (only 5 frames" in result.stderr
    assert "with a nominal 1 electron per ADU: give --e-per-adu" in result.stderr
    tifffile.imwrite(tmp_path / "three.tif", stars.frames[:3], photometric="minisblack")  # too few for k4
    result = run("calibrate", tmp_path / "three.tif", "--out", tmp_path / "three.json", "--quiet")
    assert (
        result.exit_code == 1
        and "too few to measure the camera; give --baseline and --e-per-adu" in result.stderr
    )
    given = ["--baseline", 1000, "--e-per-adu", 2, "--quiet"]
    result = run("calibrate", tmp_path / "three.tif", "--out", tmp_path / "three.json", *given)
    assert result.exit_code == 0 and "Warning: read noise: not estimated (only 3 frames)" in result.stderr
    for args, message in (
        (["--frames", 0], "--frames must be at least 1"),
        (["--em-gain", 0.5], "--em-gain must be 0"),
        (["--figure", tmp_path / "f.pdf"], "give a .png path"),
    ):
        result = run("calibrate", tmp_path / "short.tif", "--out", tmp_path / "x.json", *args)
        assert result.exit_code == 1 and message in result.stderr, result.stderr
    result = run("calibrate", tmp_path / "missing.tif")
    assert result.exit_code == 1 and result.stderr.startswith("Error: image not found")


def test_the_bench_compares_methods_on_the_same_spots_and_against_the_bound():
    movie = render_stars(frames=4, size=64, n_stars=6, seed=1)
    truth = movie.points
    bound = spot_bounds(movie, slice(None))
    # the bound of each spot: finite, below a tenth of a pixel for these bright stars, and
    # larger for the dimmer of two (photons matter, as sqrt(1 / N) would say)
    assert np.isfinite(bound).all() and (bound < 0.2).all()
    order = np.argsort(movie.photons[0])
    assert bound[0, order[0]] > bound[0, order[-1]]
    rng = np.random.default_rng(0)
    ours = truth + rng.normal(0, 0.1, truth.shape)
    theirs = truth + rng.normal(0, 0.05, truth.shape)
    theirs[:, ::2] = np.nan  # a peer that skips every other spot
    ours_row, ours_errors = score_method(ours, truth, bound, 64, 1.0)
    theirs_row, theirs_errors = score_method(theirs, truth, bound, 64, 1.0)
    assert ours_row["recall"] == 1.0 and theirs_row["recall"] == pytest.approx(0.5)
    assert ours_row["rmse_over_bound"] == pytest.approx(
        ours_row["rmse_px"] / np.sqrt(np.mean(bound**2)), rel=1e-3
    )
    same = same_spots(ours_errors, theirs_errors)
    assert same["spots"] == np.isfinite(theirs[..., 0]).sum()
    assert same["ours_px"] == pytest.approx(np.sqrt(np.nanmean(ours_errors[:, 1::2] ** 2)), abs=1e-4)
    assert same["theirs_px"] < same["ours_px"]
