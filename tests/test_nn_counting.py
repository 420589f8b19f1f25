"""Any number of spots per image: variable-count data, the counting model, SMLM-challenge scoring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pixelreg.evaluate.matching import pair_greedy
from pixelreg.evaluate.metrics import (
    best_threshold,
    detection_scores,
    keep_above,
    recall_by_separation,
    score_thresholds,
    summarize,
    threshold_sweep,
)
from pixelreg.fit.classical import baseline_detections
from pixelreg.io.datasets import load_dataset
from pixelreg.nn import readout as models
from pixelreg.nn.augment import crop_at_random
from pixelreg.nn.readout import read_detections
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.render import render
from pixelreg.simulate.spec import DataSpec


def greedy_one_by_one(pred: np.ndarray, true: np.ndarray, tolerance: float) -> np.ndarray:
    """The SMLM challenge's pairing, written the slow and obvious way: an independent oracle."""
    candidates = sorted(
        (float(np.linalg.norm(p - t)), i, j)
        for i, p in enumerate(pred)
        for j, t in enumerate(true)
        if np.isfinite(p).all() and np.isfinite(t).all() and np.linalg.norm(p - t) <= tolerance
    )
    paired, used = np.full(len(true), -1), set()
    for _, i, j in candidates:
        if i not in used and paired[j] < 0:
            used.add(i)
            paired[j] = i
    return paired


def test_greedy_pairing_matches_the_one_by_one_greedy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_pred, n_true = rng.integers(0, 7, size=2)
        pred = np.full((1, 6, 2), np.nan)
        true = np.full((1, 6, 2), np.nan)
        pred[0, :n_pred] = rng.uniform(0, 5, (n_pred, 2))
        true[0, :n_true] = rng.uniform(0, 5, (n_true, 2))
        np.testing.assert_array_equal(
            pair_greedy(pred, true, 1.5)[0], greedy_one_by_one(pred[0], true[0], 1.5)
        )


def test_greedy_pairing_takes_the_nearest_pair_first_not_the_best_total():
    # prediction 1.1 lies 1.1 from both truths; the globally smallest distance, 1.0 (prediction
    # 3.2 to truth 2.2), pairs first, so prediction 1.1 goes to truth 0
    true = np.array([[[0.0, 0.0], [2.2, 0.0]]])
    pred = np.array([[[1.1, 0.0], [3.2, 0.0]]])
    np.testing.assert_array_equal(pair_greedy(pred, true, 1.5), [[0, 1]])
    # with a tolerance below 1.1 the first truth stays unpaired
    np.testing.assert_array_equal(pair_greedy(pred, true, 1.05), [[-1, 1]])


def test_detection_scores_follow_the_challenge_formulas():
    true = np.array([[[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]])
    pred = np.array([[[10.3, 10.4], [50.0, 50.0], [np.nan, np.nan]]])  # one pair of 0.5 px, one FP
    scores = detection_scores(pred, true, tolerance=2.5, pixel_size=100.0)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 2)
    assert scores["recall"] == pytest.approx(1 / 3) and scores["precision"] == pytest.approx(1 / 2)
    assert scores["jaccard"] == pytest.approx(1 / 4) and scores["f1"] == pytest.approx(2 / 5)
    assert scores["efficiency"] == pytest.approx(100 - math.hypot(100 - 25, 50.0))


def test_undefined_scores_are_null_never_made_up():
    empty = np.full((2, 3, 2), np.nan)
    scores = detection_scores(empty, empty)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (0, 0, 0)
    assert all(scores[key] is None for key in ("recall", "precision", "f1", "jaccard", "efficiency"))
    block = summarize(empty, empty, 8, 8, variable=True)
    assert block["mse"] is None and block["exact"] is None and block["rmse_px"] is None


def test_the_threshold_with_the_best_jaccard_is_chosen():
    true = np.array([[[5.0, 5.0], [15.0, 15.0]]])
    found = np.array([[[5.1, 5.0], [15.0, 15.2], [25.0, 25.0]]])
    confidence = np.array([[0.9, 0.6, 0.3]])  # the third is false: keep what is above 0.3, not 0.6
    sweep = threshold_sweep(found, confidence, true, (0.2, 0.4, 0.5, 0.7))
    assert sweep["jaccard"] == [pytest.approx(2 / 3), 1.0, 1.0, 0.5]
    assert best_threshold(sweep) == 0.5  # the middle of the best (0.4, 0.5): [0.4, 0.5][1]
    assert np.isnan(keep_above(found, confidence, 0.5)[0, 2]).all()


def test_a_count_range_draws_each_images_count_and_pads_with_nan(run, tmp_path):
    out = tmp_path / "d.npz"
    result = run("generate", "--out", out, "--n", 400, "--size", 24, "--points", "0:5", "--seed", 1)
    assert result.exit_code == 0, result.stderr
    with np.load(out, allow_pickle=False) as data:  # numpy alone reads it
        points, count, images = data["points"], data["count"], data["images"]
        assert json.loads(str(data["spec"]))["holdout"] == "none"  # auto: images never repeat
    assert points.shape == (400, 5, 2) and set(np.unique(count)) == set(range(6))
    assert (np.isfinite(points[..., 0]).sum(1) == count).all()
    # the oracle of the clean task: each image is lit exactly at its points' pixels
    for i in range(20):
        lit = {(int(x), int(y)) for y, x in np.argwhere(images[i] > 0)}
        assert lit == {(int(round(x)), int(round(y))) for x, y in points[i, : count[i]]}
    np.testing.assert_array_equal(load_dataset(out).counts, count)


def test_a_blurred_image_of_many_spots_is_the_sum_of_its_spots():
    spec = DataSpec(n=4, height=20, width=20, points=0, points_max=3, blur=1.2, subpixel=True, brightness=150)
    points = np.array([[[3.2, 4.7], [12.5, 9.1], [np.nan, np.nan]]] * 4, dtype=np.float32)
    points[1, 1:] = np.nan  # one spot
    points[2] = np.nan  # none
    one = spec.with_(points=1, points_max=None)
    for i, expected_spots in enumerate([2, 1, 0]):
        alone = sum(render(points[i : i + 1, j : j + 1], one).astype(int) for j in range(expected_spots))
        image = render(points[i : i + 1], spec)
        assert np.abs(image.astype(int) - (alone if expected_spots else 0)).max() <= expected_spots


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--points", "5:2"], "--points 5:2 is out of order; give LO:HI with LO <= HI"),
        (["generate", "--points", "two"], "--points must be K or LO:HI (whole numbers), got 'two'"),
        (["generate", "--points", "0:0"], "--points must be at least 1, got 0"),
        (["train", "--points", "0:3", "--model", "cnn"], "the cnn model returns a fixed number"),
        (["train", "--points", "0:3", "--model", "coordconv"], "the coordconv model returns a fixed number"),
        (["train", "--points", "0:3", "--model", "heatmap"], "the heatmap model returns a fixed number"),
        (["evaluate", "missing.pt", "--threshold", "1.5"], "--threshold must be in [0, 1], got 1.5"),
        (["evaluate", "missing.pt", "--tolerance", "0"], "--tolerance must be a distance above 0 px, got 0"),
        (
            ["evaluate", "missing.pt", "--tolerance", "-1"],
            "--tolerance must be a distance above 0 px, got -1",
        ),
        (
            ["predict", "missing.pt", "x.png", "--threshold", "-0.1"],
            "--threshold must be in [0, 1], got -0.1",
        ),
        (["bench", "density", "--densities", "9:3"], "--densities takes ranges LO:HI of spots per image"),
        (["bench", "density", "--densities", "4:4"], "with 0 <= LO < HI; got '4:4'"),
    ],
)
def test_impossible_counting_options_get_one_error_line(run, tmp_path, args, message):
    result = run(*args, *(["--out", tmp_path / "out"] if args[0] in ("generate", "train", "bench") else []))
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_detections_are_read_at_the_offsets_with_the_summed_confidence():
    out = torch.zeros(1, 5, 12, 12)
    out[0, 0] = -12.0  # nothing anywhere ...
    out[0, 0, 7, 5] = 12.0  # ... but a sure spot in pixel (x 5, y 7), offset (0.2, -0.3)
    out[0, 1, 7, 5], out[0, 2, 7, 5] = 0.2, -0.3
    out[0, 0, 2, 2] = out[0, 0, 2, 3] = 0.0  # a spot on the border of two pixels: p = 0.5 each
    out[0, 1, 2, 2], out[0, 1, 2, 3] = 0.5, -0.5  # both point at x = 2.5
    points, confidence = read_detections(out, floor=0.05)
    assert confidence.shape == (1, 2)
    np.testing.assert_allclose(confidence[0].numpy(), [1.0, 1.0], atol=1e-4)
    found = sorted(map(tuple, points[0].numpy().round(4)))
    assert found == [(2.5, 2.0), (5.2, 6.7)]


def test_votes_that_point_nowhere_or_crowd_together_leave_the_spots_as_they_are(monkeypatch):
    out = torch.full((2, 5, 20, 20), -12.0)
    out[:, 1:3] = 0.0
    out[:, 0, 6, 4] = out[:, 0, 14, 15] = 12.0  # two sure spots in each image
    out[0, 0, 0:3, 10:13] = -2.0  # p = 0.12 votes: one points far off the image, one at NaN
    out[0, 1, 0, 10], out[0, 2, 0, 11] = 1e7, float("nan")
    points, confidence = read_detections(out, floor=0.05)
    found = sorted(map(tuple, points[1][confidence[1] > 0.5].numpy().round(4)))
    assert found == [(4.0, 6.0), (15.0, 14.0)]
    assert sorted(map(tuple, points[0][confidence[0] > 0.5].numpy().round(4))) == found
    # a broken network: every pixel sure and aiming at one place; compared in parts, not all at once,
    # and the other images of its batch read as they would be alone
    crowded = torch.zeros(1, 5, 40, 40)
    crowded[0, 0] = 12.0
    crowded[0, 1] = 20.0 - torch.arange(40.0)[None, :]
    crowded[0, 2] = 20.0 - torch.arange(40.0)[:, None]
    faint = torch.full((1, 5, 40, 40), -12.0)
    faint[:, 1:3] = 0.0
    faint[0, 0, 30, 8] = -1.0  # one faint spot, p = 0.27
    alone = read_detections(faint, floor=0.05)
    monkeypatch.setattr(models, "VOTE_PAIRS", 10_000)
    points, confidence = read_detections(torch.cat([crowded, faint]), floor=0.05)
    assert torch.isfinite(points[0, 0]).all() and (points[0, 0] - 20.0).abs().max() < 1e-3
    assert torch.equal(points[1, :1], alone[0][0, :1]) and torch.equal(confidence[1, :1], alone[1][0, :1])
    assert confidence[1, 0] == pytest.approx(0.2689, abs=1e-4)


def test_a_random_window_keeps_its_points_on_their_pixels_and_trains_away_from_its_cuts():
    torch.manual_seed(0)
    n, size, margin = 40, 16, 2
    index = torch.arange(40 * 40, dtype=torch.float32).reshape(1, 1, 40, 40)  # tells where a window lies
    points = torch.tensor([[[3.0, 5.0], [20.0, 31.0], [float("nan"), float("nan")]]]).repeat(n, 1, 1)
    windows, moved, trained = crop_at_random(index.repeat(n, 1, 1, 1), points, size, margin)
    assert windows.shape == (n, 1, size, size) and trained.shape == (n, size, size)
    for i in range(n):
        y0, x0 = divmod(int(windows[i, 0, 0, 0]), 40)
        for (x, y), (wx, wy) in zip(points[i, :2].tolist(), moved[i, :2].tolist(), strict=True):
            inside = x0 <= x < x0 + size and y0 <= y < y0 + size
            assert inside != math.isnan(wx) and inside != math.isnan(wy)
            if inside:
                assert (wx, wy) == (x - x0, y - y0)
        cut = [x0 > 0, x0 + size < 40, y0 > 0, y0 + size < 40]  # left, right, top, bottom cut the image
        edges = [
            trained[i, :, :margin],
            trained[i, :, -margin:],
            trained[i, :margin, :],
            trained[i, -margin:, :],
        ]
        for cuts, edge in zip(cut, edges, strict=True):
            assert not edge.any() if cuts else edge[margin:-margin].all() or edge.numel() == 0
        assert trained[i, margin:-margin, margin:-margin].all()


def test_classical_detectors_thresholded_find_every_spot_of_clean_images():
    spec = DataSpec(n=200, height=24, width=24, points=0, points_max=4, min_distance=4, seed=2)
    dataset = make_dataset(spec)
    points, scores = baseline_detections("argmax", dataset.images, spec)
    scores_at = detection_scores(keep_above(points, scores, 100.0), dataset.points, tolerance=0.5)
    assert scores_at["fp"] == 0 and scores_at["fn"] == 0


def test_two_spots_in_neighbouring_pixels_are_both_found():
    out = torch.full((1, 5, 10, 10), 0.0)
    out[0, 0] = -12.0
    out[0, 0, 4, 4], out[0, 0, 4, 5] = 6.0, 4.0  # p 0.998 and 0.982: the second is no local maximum
    out[0, 1, 4, 4], out[0, 1, 4, 5] = -0.2, 0.3
    points, confidence = read_detections(out, floor=0.05)
    found = sorted(map(tuple, points[0].numpy().round(3)))
    assert found == [(3.8, 4.0), (5.3, 4.0)]  # each at its own offset, not at their mean
    assert (confidence[0] > 0.95).all()


def test_a_small_merge_radius_tells_close_spots_apart_without_splitting_a_lone_one():
    out = torch.full((1, 5, 12, 12), 0.0)
    out[0, 0] = -12.0
    # two sure pixels side by side pointing 0.8 px apart: one spot at radius 1, two at 0.4
    out[0, 0, 3, 3], out[0, 0, 3, 4] = 5.0, 5.0
    out[0, 1, 3, 3], out[0, 1, 3, 4] = 0.1, -0.1
    # a lone spot whose four unsure side pixels overshoot by half a pixel, as an untrained rim does
    out[0, 0, 8, 8] = 0.0
    for (dy, dx), (ox, oy) in {
        (0, 1): (-1.5, 0),
        (0, -1): (1.5, 0),
        (1, 0): (0, -1.5),
        (-1, 0): (0, 1.5),
    }.items():
        out[0, 0, 8 + dy, 8 + dx] = -3.0
        out[0, 1, 8 + dy, 8 + dx], out[0, 2, 8 + dy, 8 + dx] = ox, oy

    def spots(radius: float) -> list[tuple[float, float]]:
        points, confidence = read_detections(out, floor=0.01, radius=radius)
        return sorted((round(x, 2), round(y, 2)) for x, y in points[0][confidence[0] > 0].tolist())

    assert spots(1.0) == [(3.5, 3.0), (8.0, 8.0)]
    assert spots(0.4) == [(3.1, 3.0), (3.9, 3.0), (8.0, 8.0)]
    points, confidence = read_detections(out, floor=0.01, radius=0.4)
    lone = confidence[0][(points[0] - torch.tensor([8.0, 8.0])).norm(dim=-1) < 0.01]
    assert lone.tolist() == pytest.approx(
        [0.5 + 4 * torch.sigmoid(torch.tensor(-3.0)).item()]
    )  # all of its votes


@pytest.mark.slow
def test_a_counting_model_trains_chooses_its_threshold_and_is_scored(run, tmp_path):
    options = ["--size", 16, "--points", "0:3", "--blur", 1, "--noise", 3, "--background", 20]
    options += ["--brightness", 400, "--subpixel", "--n", 1500, "--seed", 4]
    result = run("train", *options, "--epochs", 6, "--batch-size", 32, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.stderr
    run_dir = tmp_path / "train"
    checkpoint = torch.load(run_dir / "best.pt", weights_only=True)
    assert checkpoint["model"] == "offsets" and checkpoint["model_args"]["counting"] is True
    best = next(row for row in checkpoint["history"] if row["epoch"] == checkpoint["epoch"])
    assert checkpoint["threshold"] == best["threshold"]  # the one chosen on validation that epoch
    result = run("evaluate", run_dir, "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    model, fit = report["metrics"]["all"], report["baselines"]["gaussian_fit"]
    assert report["thresholds"]["model"] == pytest.approx(checkpoint["threshold"])
    assert model["recall"] > 0.9 and model["precision"] > 0.9 and model["rmse_px"] < 0.5
    assert model["tp"] + model["fn"] == fit["tp"] + fit["fn"]  # the same truths for every method
    assert model["exact"] is None and model["mse"] is None  # need every point of an image
    # a stricter threshold keeps fewer detections
    strict = json.loads(run("evaluate", run_dir, "--json", "--quiet", "--threshold", 0.99).stdout)
    assert strict["metrics"]["all"]["tp"] + strict["metrics"]["all"]["fp"] < model["tp"] + model["fp"]
    # a frame larger than the training images, with three spots of the oracle's making
    frame = np.full((40, 56), 20, dtype=np.uint8)
    spots = [(8, 9), (30, 20), (47, 33)]
    for x, y in spots:
        frame[y - 1 : y + 2, x - 1 : x + 2] = [[40, 60, 40], [60, 120, 60], [40, 60, 40]]
    np.save(tmp_path / "frame.npy", frame)
    result = run("predict", run_dir, tmp_path / "frame.npy")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "path,index,x,y,confidence,photons,background,uncertainty"
    found = sorted(
        (round(float(x)), round(float(y))) for _, _, x, y, *_ in (line.split(",") for line in lines[1:])
    )
    assert found == sorted(spots)
    result = run("plot", run_dir, "--quiet")
    assert result.exit_code == 0, result.stderr
    names = {line.rsplit("/", 1)[-1] for line in result.stdout.split()}
    assert {"precision_recall.png", "samples.png", "loss.png", "scatter.png", "error_map.png"} <= names


def test_spots_in_one_ridge_of_probability_are_told_apart_by_where_the_pixels_point():
    out = torch.zeros(1, 5, 12, 12)
    out[0, 0] = -12.0
    out[0, 0, 5, 3:8] = 0.0  # p 0.5 along five pixels of row 5: no clear local maxima
    out[0, 1, 5, 3:8] = torch.tensor([1.0, 0.0, -1.0, 0.5, -0.5])  # pointing at x 4, 4, 4 and 6.5, 6.5
    points, confidence = read_detections(out, floor=0.05)
    found = sorted(map(tuple, points[0, confidence[0] > 0].numpy().round(3)))
    assert found == [(4.0, 5.0), (6.5, 5.0)]
    np.testing.assert_allclose(sorted(confidence[0, confidence[0] > 0].tolist()), [1.0, 1.0])


def test_recall_is_binned_by_the_distance_to_the_nearest_other_spot():
    true = np.array([[[10.0, 10.0], [10.5, 10.0], [30.0, 30.0], [np.nan, np.nan]]])
    pred = np.array([[[10.2, 10.0], [30.1, 30.0], [np.nan, np.nan]]])  # the pair at 0.5 px: one found
    table = recall_by_separation(pred, true, tolerance=1.0, edges=(0.0, 1.0, 4.0))
    assert table["truths"] == [2, 0, 1] and table["recall"] == [0.5, None, 1.0]


def test_a_plateau_of_equal_pixels_is_one_candidate():
    image = np.zeros((1, 12, 12), dtype=np.uint8)
    image[0, 5, 5:7] = 200  # two equal neighbours: one spot, not two
    spec = DataSpec(n=1, height=12, width=12, points=0, points_max=3)
    _, scores = baseline_detections("argmax", image, spec)
    assert int((scores > 100).sum()) == 1


def test_trackpy_finding_nothing_is_no_detection(tmp_path):
    pytest.importorskip("trackpy")
    spec = DataSpec(n=3, height=16, width=16, points=0, points_max=2, blur=1.0)
    points, scores = baseline_detections("trackpy", np.zeros((3, 16, 16), dtype=np.uint8), spec)
    assert np.isnan(points).all() and np.isneginf(scores).all()


def test_the_bound_ratio_is_null_for_a_method_without_pairs():
    from pixelreg.evaluate.precision import precision_against_bound

    spec = DataSpec(n=4, height=16, width=16, points=0, points_max=2, blur=1.0, noise=5, background=20)
    true = np.array([[[5.0, 6.0], [np.nan, np.nan]], [[9.2, 3.1], [11.0, 12.5]]])
    report = {"metrics": {"all": {"rmse_px": None, "rmse_hits_px": None}}, "baselines": {}}
    bound = precision_against_bound(report, true, spec)
    assert bound["crlb_px"] > 0 and bound["rmse_over_crlb"] == {"model": None}


def test_a_fixed_count_file_with_missing_points_is_refused(tmp_path):
    spec = DataSpec(n=10, height=12, width=12, points=2)
    dataset = make_dataset(spec)
    points = dataset.points.copy()
    points[0, 1] = np.nan
    path = tmp_path / "holes.npz"
    np.savez(path, images=dataset.images, points=points, count=(~np.isnan(points[..., 0])).sum(1),
             split=dataset.split, spec=np.asarray(json.dumps(spec.to_dict())))  # fmt: skip
    from pixelreg.errors import PixelregError

    with pytest.raises(PixelregError, match="exactly 2 point"):
        load_dataset(path)


def test_a_threshold_is_refused_for_a_model_that_does_not_count(run, small_run):
    result = run("evaluate", small_run, "--threshold", 0.5)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: --threshold applies to a model that counts (trained with --points LO:HI); "
        "this heatmap model returns 1 point(s) per image"
    )


@pytest.mark.slow
def test_bench_density_scores_every_method_at_every_density(run, tmp_path):
    out = tmp_path / "density"
    args = ["bench", "density", "--densities", "0:1,3:6", "--n", 200, "--size", 16, "--epochs", 1]
    result = run(*args, "--out", out, "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)
    assert (out / "density.png").stat().st_size > 0 and (out / "points3-6" / "metrics.json").is_file()
    methods = [row["method"] for row in results["rows"] if row["points"] == "0:1"]
    # the model, its network before the joint fits (blur and noise fix every spot), the classics
    assert methods[:5] == ["model", "network", "argmax", "centroid", "gaussian_fit"]
    # sparse models train on denser images (30 per 64x64 pixels, 2 at 16x16) and test on their own
    models = {row["points"]: row for row in results["rows"] if row["method"] == "model"}
    assert models["0:1"]["trained_on"] == "0:2" and models["3:6"]["trained_on"] == "3:6"
    assert 0.3 < models["0:1"]["mean_spots"] < 0.7 and 3 <= models["3:6"]["mean_spots"] <= 6
    truths = {row["points"]: row["tp"] + row["fn"] for row in results["rows"] if row["method"] == "model"}
    assert all(row["tp"] + row["fn"] == truths[row["points"]] for row in results["rows"])  # the same truths
    verdict = results["verdicts"]["3:6"]
    assert set(verdict) == {
        "jaccard",
        "lead_over_classical",
        "lead_over_trackpy",
        "dense_goal",
        "sparse_goal",
    }


def test_classical_thresholds_try_the_gap_between_noise_and_spots():
    scores = np.concatenate([np.linspace(5, 10, 995), np.linspace(60, 90, 5)])[None, :]  # 995 noise peaks
    levels = score_thresholds(scores)
    assert ((levels > 10) & (levels < 60)).any()  # quantiles alone jump from noise to the spots
