"""Evaluate a checkpoint honestly: on positions never seen in training, and on every position."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelreg.errors import PixelregError
from pixelreg.evaluate.depth import score_3d
from pixelreg.evaluate.files import Evaluation, load_predictions, save_evaluation
from pixelreg.evaluate.matching import MATCH_RADIUS_PX, Scoring, match_points, pair_greedy
from pixelreg.evaluate.metrics import (
    CONFIDENCE_THRESHOLDS,
    SEPARATION_EDGES,
    as_json_float,
    best_threshold,
    keep_above,
    phase_bias,
    phase_bias_error,
    phase_centres,
    points_by_method,
    recall_by_separation,
    score_thresholds,
    summarize,
    threshold_sweep,
)
from pixelreg.evaluate.photometry import photometry_report
from pixelreg.evaluate.precision import precision_against_bound, precision_curve, wants_precision_curve
from pixelreg.fit.classical import baseline_detections, baseline_points, baselines_for
from pixelreg.fit.peers import trackpy_available
from pixelreg.io.checkpoint_header import check_data_kind
from pixelreg.io.checkpoints import load_model
from pixelreg.io.datasets import load_dataset
from pixelreg.io.runs import RunDir, resolve_checkpoint
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.inference import (
    can_count,
    check_image_size,
    detect_images,
    kept_detections,
    predict_images,
    resolve_device,
)
from pixelreg.simulate.coords import pixel_of
from pixelreg.simulate.dataset import Dataset, make_dataset
from pixelreg.simulate.render import every_position
from pixelreg.simulate.spec import SPLITS, DataSpec

SWEEP_MAX_PIXELS = 128 * 128  # evaluate every position only for images up to this size


def dataset_for(
    payload: dict[str, Any], data: str | Path | Dataset | None, split: str = "all"
) -> tuple[Dataset, str]:
    """The evaluation data: `data` if given (a file, or images made in memory), else the
    checkpoint's data rebuilt from its spec."""
    if isinstance(data, Dataset):
        return data, "images made for this evaluation"
    if data is not None:
        return load_dataset(data), str(data)
    if payload.get("data_spec"):
        spec = DataSpec.from_dict(payload["data_spec"])
        splits: tuple[str, ...] = SPLITS if split == "all" else (split,)
        if spec.variable_count and "val" not in splits:
            splits = tuple(name for name in SPLITS if name in (split, "val"))  # baselines' thresholds
        return make_dataset(spec, splits), "rebuilt from the checkpoint's data spec"
    if payload.get("data_path"):
        return load_dataset(payload["data_path"]), str(payload["data_path"])
    raise PixelregError("the checkpoint records no data to evaluate on; pass --data dataset.npz")


def seen_in_training(points: np.ndarray, train_mask: np.ndarray) -> np.ndarray:
    """(N,) bool: whether every point of an image lies on a pixel the training split used."""
    height, width = train_mask.shape
    absent = np.isnan(points[..., 0])  # the padding of a variable count: nothing to have seen
    cells = pixel_of(np.where(absent[..., None], 0.0, points))
    inside = (cells[..., 0] >= 0) & (cells[..., 0] < width) & (cells[..., 1] >= 0) & (cells[..., 1] < height)
    xs, ys = np.clip(cells[..., 0], 0, width - 1), np.clip(cells[..., 1], 0, height - 1)
    # an image without points has no position to have seen: it counts as unseen
    return (absent | (inside & train_mask[ys, xs])).all(axis=1) & ~absent.all(axis=1)


def position_sweep(
    model: PointModel, spec: DataSpec, train_mask: np.ndarray, device: torch.device | str
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics over one image per pixel position, and the (H, W) error at each position."""
    height, width = spec.size
    images, points = every_position(spec)
    pred = predict_images(model, images, device)
    errors = np.linalg.norm(pred[:, 0] - points[:, 0], axis=-1).reshape(height, width)
    unseen = ~train_mask.reshape(-1)
    metrics = {
        "all": summarize(pred, points, height, width),
        "unseen": summarize(pred[unseen], points[unseen], height, width),
    }
    return metrics, errors


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    device: str = "auto",
    sweep: bool = True,
    scoring: Scoring | None = None,
) -> Evaluation:
    """Predict `split` with a checkpoint and summarise errors for all, seen and unseen positions."""
    checkpoint = resolve_checkpoint(checkpoint)
    torch_device = resolve_device(device)
    model, payload = load_model(checkpoint, torch_device)
    return evaluate_model(model, payload, str(checkpoint), data, split, torch_device, sweep, scoring)


def evaluate_model(
    model: PointModel,
    payload: dict[str, Any],
    checkpoint: str,
    data: str | Path | Dataset | None = None,
    split: str = "test",
    device: torch.device | str = "cpu",
    sweep: bool = True,
    scoring: Scoring | None = None,
) -> Evaluation:
    """`evaluate` for a model already loaded from the checkpoint `payload`."""
    scoring = scoring or Scoring()
    if split not in (*SPLITS, "all"):
        raise PixelregError(f"--split must be one of {', '.join(SPLITS)}, all; got {split!r}")
    dataset, source = dataset_for(payload, data, split)
    check_data_kind(model.camera is not None, dataset.images.dtype == np.uint16, source)
    height, width = dataset.size
    check_image_size(model, (height, width), "the data")
    variable = dataset.spec.variable_count if dataset.spec else bool(np.isnan(dataset.points).any())
    if variable and not can_count(model):
        raise PixelregError(
            f"the data has a number of points that varies per image, but this {model.name} model "
            f"returns {model.points} per image; evaluate a model trained with --points LO:HI"
        )
    if scoring.threshold is not None and not can_count(model):
        raise PixelregError(
            f"--threshold applies to a model that counts (trained with --points LO:HI); this {model.name} "
            f"model returns {model.points} point(s) per image"
        )
    if can_count(model):
        return evaluate_counting(model, payload, checkpoint, dataset, source, split, device, scoring)
    if dataset.points.shape[1] != model.points:
        raise PixelregError(
            f"the model predicts {model.points} point(s) per image, the data has "
            f"{dataset.points.shape[1]}; evaluate on data like its training data"
        )
    index = dataset.select(split)
    if index.size == 0:
        raise PixelregError(f"the data has no images in split {split!r}; choose another --split")
    train_mask = _train_mask(payload, (height, width))
    true = dataset.points[index]
    pred = predict_images(model, dataset.images[index], device)
    if not np.isfinite(pred).all():
        bad = int((~np.isfinite(pred)).any(axis=(1, 2)).sum())
        raise PixelregError(f"the model predicts NaN or infinity for {bad} image(s); its weights are broken")
    pred = match_points(pred, true)
    seen = seen_in_training(true, train_mask)
    scored: dict[str, Any] = {"tolerance": scoring.tolerance, "pixel_size": scoring.pixel_size}
    report = report_head(checkpoint, source, split, payload, scoring)
    report["metrics"] = grouped_metrics(pred, true, seen, (height, width), scored)
    predictions = {
        "index": index,
        "images": dataset.images[index],
        "true": true,
        "pred": pred,
        "error_px": np.linalg.norm(pred - true, axis=-1).mean(1),
        "seen": seen,
        "train_mask": train_mask,
    }
    spec = dataset.spec or DataSpec(n=len(dataset), height=height, width=width, points=model.points)
    report["baselines"] = {}
    classical_images = classical_view(dataset.images[index], spec)
    for name in baselines_for(spec):
        found = match_points(baseline_points(name, classical_images, model.points, spec), true)
        report["baselines"][name] = summarize(found, true, height, width, **scored)
        predictions[f"baseline_{name}"] = found
    report["bias"] = bias_report(predictions)
    photon_bound = None
    if spec.camera_model and dataset.photometry is not None:
        methods = {"model": pred, "poisson_mle": predictions["baseline_poisson_mle"]}
        photometry = dataset.photometry[index]
        report["photometry"], arrays = photometry_report(methods, true, photometry, classical_images, spec)
        predictions.update({f"photometry_{key}": value for key, value in arrays.items()})
        photon_bound = report["photometry"]["bound_px"]
    report["crlb"] = precision_against_bound(report, true, spec, photon_bound)
    if sweep and height * width <= SWEEP_MAX_PIXELS and spec.points == 1:
        report["positions"], predictions["position_error"] = position_sweep(model, spec, train_mask, device)
    return Evaluation(report, predictions)


def classical_view(images: np.ndarray, spec: DataSpec) -> np.ndarray:
    """The images as classical methods read them: grey levels, or photons under the camera model."""
    return spec.camera.photons(images) if spec.camera_model else images


def report_head(
    checkpoint: str, source: str, split: str, payload: dict[str, Any], scoring: Scoring
) -> dict[str, Any]:
    """The fields that open every metrics.json: what was evaluated, on what, scored how."""
    return {
        "checkpoint": checkpoint,
        "data": source,
        "split": split,
        "model": payload["model"],
        "epoch": int(payload.get("epoch", 0)),
        "tolerance_px": scoring.tolerance,
        "pixel_size_nm": scoring.pixel_size,
    }


def grouped_metrics(
    pred: np.ndarray, true: np.ndarray, seen: np.ndarray, size: tuple[int, int], scored: dict[str, Any]
) -> dict[str, Any]:
    """The metrics of all images, of those whose positions training saw, and of the rest."""
    return {
        "all": summarize(pred, true, *size, **scored),
        "seen": summarize(pred[seen], true[seen], *size, **scored),
        "unseen": summarize(pred[~seen], true[~seen], *size, **scored),
    }


def evaluate_counting(
    model: PointModel,
    payload: dict[str, Any],
    checkpoint: str,
    dataset: Dataset,
    source: str,
    split: str,
    device: torch.device | str,
    scoring: Scoring,
) -> Evaluation:
    """A counting model on `split`, scored as the SMLM challenge scores: detections paired
    with truths within the tolerance, then Jaccard index, recall, precision, rmse over the
    pairs and efficiency; beside the classical detectors (and trackpy, when installed), each
    thresholded at the score that maximises its Jaccard index on the validation split."""
    height, width = dataset.size
    threshold = scoring.threshold if scoring.threshold is not None else model.threshold
    predictions, (found, confidence) = counting_predictions(
        model, dataset, split, payload, device, threshold, scoring.tolerance
    )
    true = predictions["true"]
    scored: dict[str, Any] = {
        "variable": True,
        "tolerance": scoring.tolerance,
        "pixel_size": scoring.pixel_size,
    }
    curves = {"model": threshold_sweep(found, confidence, true, CONFIDENCE_THRESHOLDS, scoring.tolerance)}
    report = report_head(checkpoint, source, split, payload, scoring)
    report["thresholds"] = {"model": as_json_float(threshold)}
    report["merge_radius_px"] = as_json_float(model.merge_radius)
    report.update(counting_metrics(predictions, scored))
    # the network's detections before the joint fits (deblend.py), where the model makes them
    report["refined"] = model.spot is not None
    report["network_only"] = (
        summarize(keep_above(found, confidence, threshold), true, height, width, **scored)
        if model.spot is not None
        else None
    )
    report["baselines"] = {}
    spec = dataset.spec or DataSpec(
        n=len(dataset), height=height, width=width, points=0, points_max=dataset.points.shape[1]
    )
    report["baseline_thresholds_from"], tuned = tune_baselines(dataset, split, spec, predictions, scoring)
    for name, (kept, chosen, curve) in tuned.items():
        report["baselines"][name] = summarize(kept, true, height, width, **scored)
        report["thresholds"][name] = as_json_float(chosen)
        curves[name] = curve
        predictions[f"baseline_{name}"] = kept.astype(np.float32)
    report["detection_curves"] = curves
    report["recall_by_separation"] = separation_recall(predictions, list(tuned), scoring.tolerance)
    report["bias"] = None  # by phase: for fixed counts, where every spot has its prediction
    report["crlb"] = precision_against_bound(report, true, spec)
    if "true_z" in predictions:  # a 3D model: the SMLM challenge's 3D scores too
        report["three_d"] = score_3d(
            predictions["pred"], predictions["pred_z"], true, predictions["true_z"], scoring.pixel_size,
            scoring.tolerance,
        )[0]  # fmt: skip
    return Evaluation(report, predictions)


def counting_predictions(
    model: PointModel,
    dataset: Dataset,
    split: str,
    payload: dict[str, Any],
    device: torch.device | str,
    threshold: float,
    tolerance: float,
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A counting model's detections on `split`: the contents of predictions.npz (those kept at
    `threshold`, each image's mean paired error, which images training saw), and every
    detection with its confidence, from which the curves and thresholds are drawn."""
    index = dataset.select(split)
    if index.size == 0:
        raise PixelregError(f"the data has no images in split {split!r}; choose another --split")
    images, true = dataset.images[index], dataset.points[index]
    found, confidence = detect_images(model, images, device)
    pred, pred_confidence = kept_detections(model, images, found, confidence, threshold)
    train_mask = _train_mask(payload, dataset.size)
    depths = {}
    if pred.shape[-1] > 2:  # a 3D model's: x, y, then the depth and its expected error (nm)
        depths = {"pred_z": pred[..., 2], "pred_uncertainty_z": pred[..., 3]}
        if dataset.photometry is not None and dataset.photometry.z is not None:
            depths["true_z"] = dataset.photometry.z[index]
        pred, found = pred[..., :2], found[..., :2]
    predictions = {
        **depths,
        "index": index,
        "images": images,
        "true": true,
        "pred": pred,
        "confidence": pred_confidence,
        "error_px": paired_error(pred, true, tolerance),
        "seen": seen_in_training(true, train_mask),
        "train_mask": train_mask,
    }
    return predictions, (found, confidence)


def counting_metrics(predictions: dict[str, np.ndarray], scored: dict[str, Any]) -> dict[str, Any]:
    """The `metrics` block of a counting model, and `every_position_trained`: where training put
    spots on every pixel no position is unseen, and only the metrics of all images are given."""
    pred, true, train_mask = predictions["pred"], predictions["true"], predictions["train_mask"]
    height, width = train_mask.shape
    every_position_trained = bool(train_mask.all())
    if every_position_trained:
        # independent images (holdout none) put spots on every pixel in training: no image is
        # of unseen positions, and "unseen" would only gather the images without spots
        metrics = {"all": summarize(pred, true, height, width, **scored)}
    else:
        metrics = grouped_metrics(pred, true, predictions["seen"], (height, width), scored)
    return {"metrics": metrics, "every_position_trained": every_position_trained}


def tune_baselines(
    dataset: Dataset, split: str, spec: DataSpec, predictions: dict[str, np.ndarray], scoring: Scoring
) -> tuple[str, dict[str, tuple[np.ndarray, float, dict[str, list[Any]]]]]:
    """Each classical detector (and trackpy, when installed) on the evaluated images, at the
    score threshold with its best Jaccard index on the validation split (or, with none, on the
    evaluated split): which split that was, and for each its detections kept, its threshold
    and its detection curve."""
    val = dataset.select("val")
    images, true = classical_view(predictions["images"], spec), predictions["true"]
    tuning = (classical_view(dataset.images[val], spec), dataset.points[val]) if val.size else (images, true)
    tuned = {}
    for name in [*baselines_for(spec), *(["trackpy"] if trackpy_available() else [])]:
        tune_points, tune_scores = baseline_detections(name, tuning[0], spec)
        levels = score_thresholds(tune_scores)
        chosen = best_threshold(
            threshold_sweep(tune_points, tune_scores, tuning[1], levels, scoring.tolerance)
        )
        points, scores = baseline_detections(name, images, spec)
        kept = keep_above(points, scores, chosen)
        tuned[name] = (kept, chosen, threshold_sweep(points, scores, true, levels, scoring.tolerance))
    return ("val" if val.size else split), tuned  # no val split: the only choice


def separation_recall(
    predictions: dict[str, np.ndarray], baselines: list[str], tolerance: float
) -> dict[str, Any]:
    """The model's and each baseline's recall binned by the distance to the nearest other true
    spot: where spots crowd, which method loses them."""
    methods = {"model": predictions["pred"], **{name: predictions[f"baseline_{name}"] for name in baselines}}
    return {
        "edges_px": list(SEPARATION_EDGES),  # bins [edge, next edge), the last one open-ended
        "methods": {
            name: recall_by_separation(pred, predictions["true"], tolerance) for name, pred in methods.items()
        },
    }


def paired_error(pred: np.ndarray, true: np.ndarray, tolerance: float) -> np.ndarray:
    """(N,) the mean distance of each image's pairs (NaN where it has none)."""
    paired = pair_greedy(pred, true, tolerance)
    distances = np.full(paired.shape, np.nan)
    rows, cols = np.nonzero(paired >= 0)
    distances[rows, cols] = np.linalg.norm(pred[rows, paired[rows, cols]] - true[rows, cols], axis=-1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an image without pairs: NaN, as meant
        return np.nanmean(distances, axis=1)


def bias_report(predictions: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean x and y error in each bin of the true sub-pixel phase (and its standard error,
    `x_se`, `y_se`), for the model and each baseline, over the spots each found within 1 px:
    the shape of any pixel locking."""
    true = predictions["true"]
    table: dict[str, Any] = {"phase": phase_centres(), "methods": {}}
    for name, pred in points_by_method(predictions).items():
        hits = np.linalg.norm(pred - true, axis=-1) <= MATCH_RADIUS_PX
        bias = phase_bias(true[hits], (pred - true)[hits])
        error = phase_bias_error(true[hits], (pred - true)[hits])
        table["methods"][name] = {
            key: [None if not np.isfinite(v) else as_json_float(v) for v in values[i]]
            for values, suffix in ((bias, ""), (error, "_se"))
            for i, axis in enumerate("xy")
            for key in [axis + suffix]
        }
    return table


def _train_mask(payload: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    mask = payload.get("train_mask")
    if mask is None or tuple(mask.shape) != size:
        return np.zeros(size, dtype=bool)  # another image size: every position is unseen
    return mask.numpy().astype(bool)


def evaluate_run_for_plots(
    run_dir: str | Path, device: str = "auto", say: Callable[[str], None] = lambda message: None
) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """What a run's figures need: its predictions (evaluating best.pt first when there are
    none yet) and, for noisy blurred data, the precision-against-noise curve.
    """
    run = RunDir(run_dir).require_trained()
    torch_device = resolve_device(device)
    checkpoint = resolve_checkpoint(run.root)
    model, payload = load_model(checkpoint, torch_device)
    if not (run.predictions.is_file() and run.metrics.is_file()):
        say(f"No {run.predictions.name} in {run.root}: evaluating {checkpoint.name} first")
        save_evaluation(evaluate_model(model, payload, str(checkpoint), device=torch_device), run.root)
    curve = None
    spec = DataSpec.from_dict(payload["data_spec"]) if payload.get("data_spec") else None
    if (
        spec is not None and wants_precision_curve(spec) and not can_count(model)
    ):  # counting: precision_recall.png
        say("Measuring model, baselines and the Cramér-Rao bound over noise levels")
        curve = precision_curve(model, spec, torch_device)
    return load_predictions(run.predictions), curve
