"""A 3D model through the commands: train on an astigmatic PSF, predict (z in both tables),
evaluate (the 3D scores), plot (the depth-coloured rendering), and the settings it refuses."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch

from pixelreg.errors import PixelregError
from pixelreg.io.checkpoint_header import ModelHeader
from pixelreg.io.checkpoints import save_checkpoint
from pixelreg.nn.registry import build_model
from pixelreg.simulate.psf import DefocusCurves, astigmatic_gaussian_psf
from pixelreg.simulate.render import render_with_truth
from pixelreg.simulate.spec import DataSpec


def _astigmatic_file(tmp_path):
    return astigmatic_gaussian_psf(DefocusCurves(1.0, 250.0, 350.0), np.arange(-600.0, 601.0, 100.0)).save(
        tmp_path / "psf.npz"
    )


def test_a_3d_checkpoint_says_so_and_a_bad_depth_range_is_refused(tmp_path):
    args = {"height": 16, "width": 16, "points": 3, "counting": True, "z_range": [-500.0, 500.0]}
    payload = {
        "model": "offsets",
        "model_args": args,
        "state_dict": build_model("offsets", **args).state_dict(),
    }
    header = ModelHeader.read(save_checkpoint(tmp_path / "m.pt", payload))
    assert header.three_d
    with pytest.raises(PixelregError, match="mirror images"):
        header.check_settings(mirror=True)
    payload["model_args"] = {**args, "z_range": ["deep", 500.0]}
    with pytest.raises(PixelregError, match="z_range"):
        ModelHeader.read(save_checkpoint(tmp_path / "bad.pt", payload))
    assert torch.load(tmp_path / "m.pt", weights_only=True)["model_args"]["z_range"] == [-500.0, 500.0]


def test_a_psf_that_does_not_tell_depth_trains_a_2d_model(tmp_path):
    flat = astigmatic_gaussian_psf(DefocusCurves(1.0, 0.0, 350.0), np.arange(-600.0, 601.0, 100.0))
    assert not flat.tells_depth  # no cylindrical lens: the two axes focus together
    spec = DataSpec(n=10, height=16, width=16, points=0, points_max=3, photons=1000,
                    background_photons=10, psf=str(flat.save(tmp_path / "flat.npz")), z=-300, z_max=300)  # fmt: skip
    assert spec.depth_range is None
    spec = spec.with_(psf=str(_astigmatic_file(tmp_path)))
    assert spec.depth_range == (-300.0, 300.0) and spec.blur > 0.3  # the PSF's own width


@pytest.mark.slow  # trains
def test_a_3d_model_trains_predicts_evaluates_and_plots(run, tmp_path):
    psf = _astigmatic_file(tmp_path)
    result = run("train", "--psf", psf, "--z", "-500:500", "--photons", "2000:4000", "--background-photons", 10,
                 "--points", "0:3", "--size", 16, "--n", 300, "--epochs", 2, "--no-mirror", "--device", "cpu",
                 "--out", tmp_path / "runs", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    run_dir = tmp_path / "runs" / "train"
    assert torch.load(run_dir / "best.pt", weights_only=True)["model_args"]["z_range"] == [-500.0, 500.0]
    with open(run_dir / "history.csv") as handle:
        assert "val_rmse_z_nm" in next(csv.reader(handle))
    spec = DataSpec(n=4, height=16, width=16, points=1, photons=3000, background_photons=10, psf=str(psf),
                    z=-300, z_max=300)  # fmt: skip
    frames, _ = render_with_truth(np.array([[[7.2, 8.4]]] * 4), spec, np.random.default_rng(0))
    tifffile.imwrite(tmp_path / "frames.tif", frames, photometric="minisblack")
    result = run(
        "predict", run_dir, tmp_path / "frames.tif", "--threshold", 0.0, "--out", tmp_path / "locs.csv"
    )
    assert result.exit_code == 0, result.stderr
    with open(tmp_path / "locs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-2:] == ["z", "uncertainty_z"]
    assert all(-700 < float(row["z"]) < 700 and float(row["uncertainty_z"]) > 0 for row in rows)
    result = run("predict", run_dir, tmp_path / "frames.tif", "--format", "thunderstorm", "--threshold", 0.0)
    assert result.exit_code == 0 and '"z [nm]","uncertainty_z [nm]"' in result.stdout.splitlines()[0]
    result = run("predict", run_dir, tmp_path / "frames.tif", "--mirror")
    assert result.exit_code == 1 and "mirror images" in result.stderr and result.stderr.count("\n") == 1
    result = run("evaluate", run_dir, "--device", "cpu", "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)["three_d"]
    assert {"jaccard", "rmse_lateral_nm", "rmse_axial_nm", "efficiency_axial"} <= set(scores)
    result = run("plot", tmp_path / "locs.csv")
    assert result.exit_code == 0 and (tmp_path / "locs.png").stat().st_size > 10_000
