"""Measuring a PSF from beads and from a movie, against the optics that made them (rendered by
the foreign pupil renderer), and `calibrate --beads` as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from pixelreg.errors import PixelregError
from pixelreg.fit.calibrate import calibrate
from pixelreg.fit.psf_measure import fourier_shift, psf_from_beads, upsample
from pixelreg.simulate.foreign import render_bead_stack, render_pupil_movie, render_stars
from pixelreg.simulate.psf import Optics, pupil_psf


@pytest.fixture(scope="module")
def beads():
    return render_bead_stack()


@pytest.fixture(scope="module")
def movie():
    return render_pupil_movie(frames=20)


@pytest.fixture(scope="module")
def true_psf():
    return pupil_psf(Optics(), np.arange(-600.0, 601.0, 50.0), radius=8, grid=512)


def test_fourier_shifts_move_by_whole_pixels_as_a_roll_does_and_interpolate_a_band_limited_psf(true_psf):
    plane = true_psf.values[12, ::4, ::4]  # the pixel-integrated PSF at the pixels' centres
    moved = fourier_shift(plane[None], np.array([[2.0, -1.0]]))[0]
    assert np.allclose(moved, np.roll(plane, (-1, 2), axis=(0, 1)), atol=1e-12)
    fine = upsample(plane[None], true_psf.radius)[0]  # back to the grid of 4 a pixel
    inner = slice(8, -8)  # away from the edge, where the window cuts the rings
    assert np.abs(fine[inner, inner] - true_psf.values[12][inner, inner]).max() < 0.01 * plane.max()


def test_beads_give_the_objectives_psf(beads, true_psf):
    stack, truth = beads
    measured = psf_from_beads(stack, 50.0)
    assert len(measured.beads) == len(truth) and measured.left_out == 0
    found = measured.beads[np.argsort(measured.beads[:, 0])]
    assert np.abs(found - truth[np.argsort(truth[:, 0])]).max() < 0.02  # px
    assert abs(measured.psf.z_first + 600.0) < 15.0  # the focus within 15 nm
    for z in (-150.0, 0.0, 150.0, 300.0):
        ours, theirs = measured.psf.pixel_samples(z), true_psf.pixel_samples(z)
        assert ours.sum() == pytest.approx(theirs.sum(), rel=0.04)  # light beyond the window is not seen
        assert np.abs(ours / ours.sum() - theirs / theirs.sum()).max() < 0.03 * theirs.max() / theirs.sum()
        assert measured.psf.gaussian_sigma(z) == pytest.approx(true_psf.gaussian_sigma(z), rel=0.03)


def test_bad_bead_stacks_are_refused(beads):
    stack, _ = beads
    rng = np.random.default_rng(0)
    cases = (
        (stack[:4], 50.0, "at least 5 planes"),
        ((100 + rng.normal(0, 2, stack.shape)).astype(np.uint16), 50.0, "no bead found"),
        (np.where(stack > 3000, 65535, stack).astype(np.uint16), 50.0, "saturate"),
        (stack, 0.0, "--z-step must be above 0"),
    )
    for data, step, message in cases:
        with pytest.raises(PixelregError, match=message):
            psf_from_beads(data, step)
    crowded = stack + np.roll(stack, 5, axis=2) - 100  # every bead with a twin 5 px beside it
    with pytest.raises(PixelregError, match="touch another bead"):
        psf_from_beads(crowded, 50.0)


def test_the_movie_alone_keeps_a_gaussian_for_gaussian_spots_and_measures_a_pupils(movie):
    pupil = calibrate(movie.frames, psf_model="auto")
    assert pupil.psf is not None and pupil.psf.planes == 1
    assert pupil.psf.gaussian_sigma() == pytest.approx(0.95, abs=0.03)
    stars = calibrate(render_stars(frames=20, size=128, n_stars=30, baseline=100).frames, psf_model="auto")
    assert stars.measured is not None and stars.psf is None  # measured, found a Gaussian
    assert calibrate(movie.frames, psf_model="gaussian").psf is None


@pytest.mark.slow  # calibrates a movie four times through the command line
def test_calibrate_with_beads_writes_the_psf_beside_the_spec(run, beads, movie, tmp_path):
    tifffile.imwrite(tmp_path / "movie.tif", movie.frames)
    tifffile.imwrite(tmp_path / "beads.tif", beads[0])
    out = tmp_path / "cal" / "spec.json"
    (tmp_path / "cal").mkdir()
    result = run("calibrate", tmp_path / "movie.tif", "--beads", tmp_path / "beads.tif", "--z-step", 50,
                 "--out", out, "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["psf_file"] == str(tmp_path / "cal" / "psf.npz") and written["psf"]["source"] == "beads"
    assert sorted(p.name for p in (tmp_path / "cal").iterdir()) == [
        "psf.npz",
        "psf.png",
        "spec.json",
        "spec.png",
    ]
    spec = json.loads(out.read_text())["spec"]
    assert spec["psf"] == "psf.npz" and -400 < spec["z"] < -100 < 100 < spec["z_max"] < 400  # true: 150
    for args, message in (
        (["--beads", tmp_path / "beads.tif"], "--beads needs --z-step"),
        (["--z-step", 50], "give --beads too"),
        (["--psf", "spline"], "--psf must be one of auto, gaussian, measured"),
        (["--psf-out", tmp_path / "p.tif"], "give a .npz path"),
        (["--beads", tmp_path / "missing.tif", "--z-step", 50], "not found"),
    ):
        result = run("calibrate", tmp_path / "movie.tif", "--out", tmp_path / "x.json", *args)
        assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1, (
            result.stderr
        )
    tifffile.imwrite(tmp_path / "flat.tif", beads[0][:3], photometric="minisblack")
    result = run("calibrate", tmp_path / "movie.tif", "--beads", tmp_path / "flat.tif", "--z-step", 50,
                 "--out", tmp_path / "flat.json")  # fmt: skip
    assert result.exit_code == 1 and "at least 5 planes" in result.stderr
    assert not (tmp_path / "flat.json").exists() and not (tmp_path / "psf.npz").exists()
