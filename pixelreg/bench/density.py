"""`pixelreg bench density`: a counting model against classical detectors from sparse to dense
images, scored as the SMLM challenge 2016 scores."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelreg.bench.defaults import (
    DENSITY_CONDITIONS,
    DENSITY_EPOCHS,
    DENSITY_LEAD,
    DENSITY_RANGES,
    DENSITY_TRAINING_MOST,
)
from pixelreg.errors import PixelregError
from pixelreg.evaluate.files import save_evaluation
from pixelreg.evaluate.report import evaluate_model
from pixelreg.io.checkpoints import load_model
from pixelreg.nn.config import TrainConfig
from pixelreg.nn.inference import resolve_device
from pixelreg.nn.train import Reporter, train
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import DataSpec, parse_count

SPARSE_SHARE = 0.995  # the goal for sparse images: recall and precision at least this ...
SPARSE_RMSE = 1.1  # ... and the pairs' rmse within this many times the bound of a spot alone
SCORES = ("jaccard", "recall", "precision", "f1", "rmse_px", "efficiency", "tp", "fp", "fn")


def density_spec(spec: DataSpec, counts: str) -> DataSpec:
    """The data of one density: `counts` (LO:HI) spots per image; size, n and seed from `spec`."""
    try:
        low, high = parse_count(counts)
        if high is None:
            raise PixelregError("not a range")
        # images of several sub-pixel spots in noise never repeat: independent images (holdout
        # none), so that test spots lie as densely as training spots
        return spec.with_(points=low, points_max=high, holdout="none", **DENSITY_CONDITIONS)
    except PixelregError:
        raise PixelregError(
            f"--densities takes ranges LO:HI of spots per image with 0 <= LO < HI; got {counts!r}"
        ) from None


def run_density(
    out: str | Path,
    spec: DataSpec,
    epochs: int = DENSITY_EPOCHS,
    device: str = "auto",
    ranges: tuple[str, ...] = DENSITY_RANGES,
    reporter_for: Callable[[str], Reporter | None] = lambda label: None,
) -> dict[str, Any]:
    """Train the counting model for each density (on LO to at least DENSITY_TRAINING_MOST spots
    per image) and evaluate it on the density's own test images beside the classical detectors,
    each thresholded on validation: one row per (density, method)."""
    out = Path(out)
    specs = [density_spec(spec, counts) for counts in ranges]  # every range checked before any work
    torch_device = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for counts, data_spec in zip(ranges, specs, strict=True):
        height, width = data_spec.size
        most = max(data_spec.points_max or 1, round(DENSITY_TRAINING_MOST * height * width / 64**2))
        training_spec = data_spec.with_(points_max=most)
        config = TrainConfig(
            model="offsets", epochs=epochs, seed=spec.seed, device=device, spec=training_spec.to_dict()
        )
        started = time.perf_counter()
        result = train(
            config, out / f"points{counts.replace(':', '-')}", reporter_for(f"{counts} spots per image")
        )
        seconds = time.perf_counter() - started
        model, payload = load_model(result.best_path, torch_device)
        test_images = make_dataset(data_spec, ("val", "test"))  # val: the baselines' thresholds
        evaluation = evaluate_model(
            model, payload, str(result.best_path), test_images, device=torch_device, sweep=False
        )
        save_evaluation(evaluation, result.run_dir)  # `pixelreg plot` draws each density's figures
        report = evaluation.report
        bound = report["crlb"]["crlb_px"] if report["crlb"] else None
        truths = evaluation.predictions["true"]
        mean_spots = float((truths[..., 0] == truths[..., 0]).sum(1).mean())
        methods = {"model": report["metrics"]["all"]}
        if report["network_only"] is not None:  # the model's detections before the joint fits
            methods["network"] = report["network_only"]
        methods.update(report["baselines"])
        for method, block in methods.items():
            row: dict[str, Any] = {"points": counts, "mean_spots": round(mean_spots, 3), "method": method}
            row["trained_on"] = (
                f"{training_spec.points}:{training_spec.points_max}" if method == "model" else None
            )
            row.update({key: block[key] for key in SCORES})
            rmse = block["rmse_px"]
            row["rmse_over_crlb"] = None if rmse is None or not bound else round(rmse / bound, 4)
            row["threshold"] = report["thresholds"]["model" if method == "network" else method]
            row["train_seconds"] = round(seconds, 1) if method == "model" else None
            rows.append(row)
    results = {
        "conditions": DENSITY_CONDITIONS,
        "spec": spec.to_dict(),
        "epochs": epochs,
        "tolerance_px": rows and report["tolerance_px"],
        "pixel_size_nm": rows and report["pixel_size_nm"],
        "lead_goal": DENSITY_LEAD,
        "rows": rows,
    }
    results["verdicts"] = density_verdicts(rows)
    return results


def density_verdicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per density: the model's Jaccard index and its lead over the best classical detector and
    over trackpy (None where trackpy did not run), and both goals: `dense_goal`, a
    lead of DENSITY_LEAD and above trackpy; `sparse_goal`, recall and precision of at least
    SPARSE_SHARE and an rmse within SPARSE_RMSE times the bound of a spot alone."""
    verdicts = {}
    for counts in dict.fromkeys(row["points"] for row in rows):
        cell = {row["method"]: row for row in rows if row["points"] == counts}
        model = cell["model"]
        jaccard = model["jaccard"] or 0.0
        best = max(
            (
                row["jaccard"] or 0.0
                for name, row in cell.items()
                if name not in ("model", "network", "trackpy")
            ),
            default=0.0,
        )
        trackpy = (cell["trackpy"]["jaccard"] or 0.0) if "trackpy" in cell else None
        verdicts[counts] = {
            "jaccard": jaccard,
            "lead_over_classical": round(jaccard - best, 4),
            "lead_over_trackpy": None if trackpy is None else round(jaccard - trackpy, 4),
            "dense_goal": jaccard - best >= DENSITY_LEAD and (trackpy is None or jaccard > trackpy),
            "sparse_goal": (model["recall"] or 0.0) >= SPARSE_SHARE
            and (model["precision"] or 0.0) >= SPARSE_SHARE
            and model["rmse_over_crlb"] is not None
            and model["rmse_over_crlb"] <= SPARSE_RMSE,
        }
    return verdicts
