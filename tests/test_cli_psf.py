"""A model of a measured PSF through the commands that read it: evaluate (the ML baseline of
the PSF) and predict (photons and the ThunderSTORM sigma through the PSF), and its PSF file gone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from pixelreg.io.checkpoints import save_checkpoint
from pixelreg.nn.registry import build_model
from pixelreg.simulate.psf import Optics, pupil_psf
from pixelreg.simulate.render import render
from pixelreg.simulate.spec import DataSpec


@pytest.mark.slow  # evaluates an untrained model's hundreds of detections through the PSF
def test_a_psf_model_is_evaluated_and_predicts_through_its_psf(run, tmp_path):
    psf = pupil_psf(Optics(), np.arange(-200.0, 201.0, 50.0), radius=6, grid=512)
    psf.save(tmp_path / "psf.npz")
    spec = DataSpec(n=100, height=16, width=16, points=0, points_max=3, blur=0.95, photons=1000,
                    photons_max=3000, background_photons=10, psf=str(tmp_path / "psf.npz"), z=-100, z_max=100)  # fmt: skip
    args = {"height": 16, "width": 16, "points": 3, "counting": True}
    payload = {"model": "offsets", "model_args": args, "state_dict": build_model("offsets", **args).state_dict(),
               "data_spec": spec.to_dict(), "epoch": 1}  # fmt: skip
    checkpoint = save_checkpoint(tmp_path / "model.pt", payload)
    result = run("evaluate", checkpoint, "--device", "cpu", "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "poisson_mle" in json.loads(result.stdout)["baselines"]  # the ML fit of the PSF itself
    frames = render(
        np.array([[[7.3, 8.6]]] * 3), spec.with_(points=1, points_max=None), np.random.default_rng(0)
    )
    tifffile.imwrite(tmp_path / "frames.tif", frames, photometric="minisblack")
    result = run("predict", checkpoint, tmp_path / "frames.tif", "--format", "thunderstorm", "--pixel-size", 100,
                 "--threshold", 0.0)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].startswith('"id","frame","x [nm]","y [nm]","sigma [nm]"') and len(rows) > 1
    sigma = float(rows[1].split(",")[4])
    assert sigma == pytest.approx(100 * psf.gaussian_sigma(0.0), abs=0.5)  # the PSF's, not --blur's 95
    (tmp_path / "psf.npz").unlink()
    result = run("predict", checkpoint, tmp_path / "frames.tif")
    assert result.exit_code == 1 and "PSF file not found" in result.stderr and result.stderr.count("\n") == 1
