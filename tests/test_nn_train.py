import json
import os
import signal

import numpy as np
import pytest
import torch
from conftest import SMALL_EPOCHS

from pixelreg.errors import PixelregError
from pixelreg.evaluate.report import evaluate
from pixelreg.io.runs import next_run_dir
from pixelreg.nn.train import (
    CheckpointPolicy,
    SilentReporter,
    TrainConfig,
    TrainingInterrupted,
    resume,
    train,
)

TINY = {"n": 400, "height": 16, "width": 16, "seed": 1}


def _config(**changes):
    return TrainConfig(
        **{"model": "heatmap", "epochs": 3, "batch_size": 32, "device": "cpu", "spec": dict(TINY), **changes}
    )


def _history_without_times(run_dir):
    lines = (run_dir / "history.csv").read_text().splitlines()
    return [line.rsplit(",", 1)[0] for line in lines]


def test_heatmap_is_exact_on_a_quadrant_it_never_saw(small_run):
    evaluation = evaluate(small_run / "best.pt", device="cpu")
    metrics = evaluation.report["metrics"]
    assert metrics["unseen"]["n"] > 0 and metrics["seen"]["n"] == 0
    assert metrics["unseen"]["exact"] == 1.0
    assert metrics["unseen"]["mean_px"] <= 0.01
    every = evaluation.report["positions"]
    assert every["all"]["n"] == 256 and every["all"]["exact"] == 1.0
    assert every["unseen"]["n"] >= 64  # the whole held-out quadrant
    assert every["unseen"]["exact"] == 1.0


def test_a_run_writes_config_history_and_both_checkpoints(small_run):
    assert {p.name for p in small_run.iterdir()} >= {"config.json", "history.csv", "best.pt", "last.pt"}
    assert json.loads((small_run / "config.json").read_text())["model"] == "heatmap"
    header, *rows = (small_run / "history.csv").read_text().splitlines()
    assert header == "epoch,train_loss,val_loss,val_mean_px,val_exact,lr,seconds"
    assert len(rows) == SMALL_EPOCHS
    assert not [p for p in small_run.iterdir() if p.name.endswith(".tmp")]


def test_same_seed_gives_identical_runs(tmp_path):
    train(_config(), tmp_path / "a")
    train(_config(), tmp_path / "b")
    assert _history_without_times(tmp_path / "a") == _history_without_times(tmp_path / "b")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    reports = [evaluate(tmp_path / name / "best.pt", device="cpu").report for name in ("a", "b")]
    for report in reports:
        report.pop("checkpoint")
    assert json.dumps(reports[0]) == json.dumps(reports[1])


class InterruptAfter(SilentReporter):
    """Sends this process a real SIGINT at the end of a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.at = epoch

    def epoch(self, row, best):
        if row["epoch"] == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train(_config(), tmp_path / "straight")
    with pytest.raises(TrainingInterrupted) as stopped:
        train(_config(), tmp_path / "stopped", InterruptAfter(1))
    assert stopped.value.epoch == 1
    resumed = resume(tmp_path / "stopped" / "last.pt")
    assert resumed.run_dir == tmp_path / "stopped"
    assert _history_without_times(tmp_path / "straight") == _history_without_times(tmp_path / "stopped")
    a = torch.load(tmp_path / "straight" / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "stopped" / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    again = resume(tmp_path / "stopped")  # a run directory means its last.pt
    assert again.already_finished


@pytest.mark.slow
def test_cnn_baseline_learns_on_a_small_image():
    torch.manual_seed(0)
    from pixelreg.nn.inference import predict_images
    from pixelreg.nn.registry import build_model
    from pixelreg.simulate.dataset import make_dataset
    from pixelreg.simulate.spec import DataSpec

    dataset = make_dataset(DataSpec(n=1500, height=16, width=16, holdout="none"))
    model = build_model("cnn", height=16, width=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.from_numpy(dataset.images).float()[:, None] / 255
    points = torch.from_numpy(dataset.points)
    for _ in range(15):
        for start in range(0, 1500, 50):
            loss = model.loss(images[start : start + 50], points[start : start + 50])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    error = np.linalg.norm(predict_images(model, dataset.images) - dataset.points, axis=-1).mean()
    assert error < 1.0  # a 16x16 image: random guessing is about 6 px off


def test_run_names_count_up_and_an_explicit_taken_name_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train2").mkdir()
    assert next_run_dir(tmp_path, None) == tmp_path / "train3"
    with pytest.raises(PixelregError, match="already exists"):
        next_run_dir(tmp_path, "train")
    assert next_run_dir(tmp_path, "train", exist_ok=True) == tmp_path / "train"


def test_the_best_epoch_is_the_last_of_equals_and_is_the_one_best_pt_holds(tmp_path):
    from pixelreg.io.runs import RunDir

    policy = CheckpointPolicy(RunDir(tmp_path), writes=False)
    rows = [(1, 0.5, 0.2), (2, 0.0, 0.1), (3, 0.0, 0.3), (4, 0.0, 0.1), (5, 0.2, 0.0)]
    marks = [
        policy.epoch_done({"epoch": e, "val_mean_px": px, "val_loss": loss}, dict) for e, px, loss in rows
    ]
    assert marks == [True, True, False, True, False]
    assert policy.best_epoch == 4  # ties on (error, loss) go to the later epoch
    result = train(_config(epochs=2), tmp_path / "run")
    assert result.best_epoch == torch.load(result.best_path, weights_only=True)["epoch"]
    assert result.best_val_mean_px == min(row["val_mean_px"] for row in result.history)


def test_validation_images_in_training_are_the_generated_val_split():
    from pixelreg.nn.train import load_training_data
    from pixelreg.simulate.dataset import make_dataset
    from pixelreg.simulate.spec import DataSpec

    spec = {**TINY, "noise": 6.0, "blur": 1.0, "background": 30.0, "subpixel": True}
    data = load_training_data(_config(spec=spec))
    dataset = make_dataset(DataSpec(**spec))
    val = dataset.select("val")
    np.testing.assert_array_equal(data.val_images, dataset.images[val])
    np.testing.assert_array_equal(data.val_points, dataset.points[val])
