"""The simulated twin and the calibrations it checks, on movies other renderers made (their truth
the oracle): short sCMOS movies, movies that are not photon counts, and movies of no spots."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from pixelreg.fit.calibrate import calibrate
from pixelreg.simulate.foreign import render_grey_spots, render_smlm, render_stars


def short_scmos(seed: int = 0) -> np.ndarray:
    """20 frames of 128x128 on an sCMOS: 2 e-/ADU, baseline 100, background 12 to 18 photons."""
    return render_stars(
        frames=20, size=128, n_stars=30, seed=seed, baseline=100, e_per_adu=2.0, background=(12, 18)
    ).frames


def one_blob() -> np.ndarray:
    """A wide bright blob, the same in every frame: no spots of a PSF at all."""
    yy, xx = np.mgrid[0:128, 0:128]
    blob = 100 + 3000 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / (2 * 12.0**2))
    return np.random.default_rng(0).poisson(np.broadcast_to(blob, (20, 128, 128))).astype(np.uint16)


def texture() -> np.ndarray:
    """A smooth random texture with shot noise: structure everywhere, spots nowhere."""
    rng = np.random.default_rng(0)
    field = np.cumsum(np.cumsum(rng.normal(0, 1, (20, 128, 128)), 1), 2)
    return (1000 + 150 * (field - field.min()) / field.std() + rng.poisson(30, field.shape)).astype(np.uint16)


def test_a_short_scmos_movie_gives_its_gain_and_baseline():
    found = calibrate(short_scmos())
    gain, baseline = found.estimates["e_per_adu"], found.estimates["baseline"]
    assert gain.how == "estimated" and gain.value == pytest.approx(2.0, rel=0.05)
    assert gain.spread is not None and 0 < gain.spread < 0.15  # an uncertainty, and an honest one
    assert baseline.value == pytest.approx(100.0, abs=1.0)
    assert found.spec.background_photons == pytest.approx(12.0, abs=1.0)
    assert found.spec.background_photons_max == pytest.approx(18.0, abs=1.0)
    assert found.warnings == []


def test_every_estimate_says_how_sure_it_is():
    found = calibrate(short_scmos())
    unsure = [name for name, e in found.estimates.items() if e.how == "estimated" and e.spread is None]
    assert unsure == []


@pytest.mark.parametrize(
    "movie",
    [
        lambda: render_stars(frames=40, size=96, n_stars=14, seed=2).frames,
        short_scmos,
        lambda: render_grey_spots(frames=20, seed=0).frames,
    ],
    ids=["stars", "short sCMOS", "12-bit grey spots"],
)
def test_the_twin_of_a_movie_of_spots_agrees_with_it(movie):
    twin = calibrate(movie()).twin
    assert twin is not None and twin.agrees, twin.disagreements()
    assert twin.frames.shape == twin.movie.shape


def test_the_twin_of_an_emccd_movie_agrees_with_it():
    twin = calibrate(render_smlm(frames=60, size=96, seed=3).frames, em_gain=100.0).twin
    assert twin is not None and twin.agrees, twin.disagreements()


def salt_and_pepper() -> np.ndarray:
    """The short sCMOS movie with 3% of its pixels read as 0 or 4000: noise no camera makes."""
    frames = short_scmos().copy()
    rng = np.random.default_rng(0)
    hit = rng.random(frames.shape) < 0.03
    frames[hit] = rng.choice([0, 4000], size=int(hit.sum()))
    return frames


@pytest.mark.parametrize(
    ("movie", "statistic"),
    [
        (one_blob, "spot peak height"),
        (texture, "background noise"),
        (salt_and_pepper, "background pixels beyond"),
    ],
)
def test_the_twin_refuses_what_it_cannot_match(movie, statistic):
    found = calibrate(movie())
    assert found.twin is not None and not found.twin.agrees
    assert any(line.startswith(statistic) for line in found.twin.disagreements())
    with pytest.raises(Exception, match="the spec cannot have made this movie"):
        found.require_twin()


@pytest.mark.parametrize("gradient", [0.0, 600.0])
def test_frames_that_are_not_photon_counts_are_described_as_they_are(gradient):
    movie = render_grey_spots(frames=20, seed=1, gradient=gradient)
    found = calibrate(movie.frames)
    gain, baseline = found.estimates["e_per_adu"], found.estimates["baseline"]
    assert gain.how == baseline.how == "default" and gain.value == 1.0
    # additive noise on the background: the floor is the pedestal plus the noise's mean (150)
    assert baseline.value == pytest.approx(200 + 150, abs=30)
    assert found.estimates["read_noise"].value == pytest.approx(300 / np.sqrt(12), rel=0.1)
    assert any("not measured" in w for w in found.warnings)
    if gradient:
        assert any("variance does not grow with its level" in w for w in found.warnings)
    assert found.twin is not None and found.twin.agrees, found.twin.disagreements()


def test_calibrate_refuses_a_movie_its_twin_cannot_match_and_writes_nothing(run, tmp_path):
    tifffile.imwrite(tmp_path / "blob.tif", one_blob())
    result = run("calibrate", tmp_path / "blob.tif", "--out", tmp_path / "out" / "spec.json")
    assert result.exit_code == 1 and "the twin's" in result.stderr
    assert "Error: the spec cannot have made this movie" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # trains (a subprocess, as a user runs it)
def test_the_spec_says_how_each_value_was_found_and_train_warns_of_defaults(run, tmp_path):
    tifffile.imwrite(tmp_path / "grey.tif", render_grey_spots(frames=20, seed=0).frames)
    made = run("calibrate", tmp_path / "grey.tif", "--out", tmp_path / "spec.json", "--quiet")
    assert made.exit_code == 0, made.stderr
    document = json.loads((tmp_path / "spec.json").read_text())
    assert document["estimates"]["e_per_adu"]["how"] == "default"
    assert all(row["agrees"] for row in document["twin"])
    command = [sys.executable, "-m", "pixelreg", "train", "--spec", str(tmp_path / "spec.json"), "--n", "200"]
    command += ["--size", "16", "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet"]
    trained = subprocess.run(command, capture_output=True, text=True, timeout=300)  # as a user runs it
    assert trained.returncode == 0, trained.stderr
    assert "Warning:" in trained.stderr and "e_per_adu is a default (1), not measured" in trained.stderr
