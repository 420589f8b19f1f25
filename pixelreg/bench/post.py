"""`bench post`: drift, merge and resolution on simulated experiments with a known truth.

Each experiment is a table of blinking molecules on filaments (`simulate.experiment`), drifting
by a known slow curve. Scored: the residual drift after `drift` (rms over frames, x and y
together, less the constant offset no method can know), beside the same RCC at Picasso's
settings (camera-pixel bins, segments of fixed length: an imitation in pixelreg's code, not
Picasso itself); the merged rows against the true blinking events and their rmse against the
combined bound; the FRC resolution of the raw, the corrected and the truly corrected table;
NeNA against the true precision of the localizations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.evaluate.matching import pair_greedy
from pixelreg.io.locs import COLUMNS, Localizations
from pixelreg.post.drift import Drift, estimate_drift, rcc_drift, undrift
from pixelreg.post.merge import merge_events
from pixelreg.post.resolution import nena, ring_correlation
from pixelreg.simulate.experiment import Experiment, blinking_experiment

PIXEL_NM = 100.0
PICASSO_SEGMENTS = (200, 500, 1000)  # frames: Picasso's default segment is 1,000
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "filaments": {"seed": 0, "frames": 3000},  # ~7 localizations a frame, 80 nm of drift
    "dense, dim": {  # ~10 a frame, fewer photons over more background, 100 nm of drift
        "seed": 1,
        "frames": 5000,
        "off_frames": 1000.0,
        "photons": 800.0,
        "background": 30.0,
        "drift_nm": 100.0,
    },
}


def residual_nm(drift: np.ndarray, truth: np.ndarray) -> float:
    """rms over frames of the drift's error (nm, x and y together), less its mean."""
    error = drift - truth
    error = error - error.mean(axis=0)
    return float(np.sqrt((error**2).sum(axis=1).mean()) * PIXEL_NM)


def picasso_like(table: Localizations, segment: int) -> np.ndarray:
    """RCC as Picasso's undrift runs it: fixed segments, one-pixel bins blurred by a pixel, a
    cubic spline through the segments' shifts."""
    return rcc_drift(table, segment, bin_px=1.0)[0]


def without_true_drift(table: Localizations, drift: np.ndarray) -> Localizations:
    """`table` with the true `drift` (frames, 2) taken away."""
    return undrift(table, Drift(drift[:, 0], drift[:, 1], 0, "truth", np.zeros(0), np.zeros((0, 2))))


def score_experiment(experiment: Experiment) -> tuple[dict[str, Any], Drift, dict[str, Any]]:
    """One experiment's scores, its estimated drift, and the curves to draw."""
    table = experiment.table
    started = time.perf_counter()
    drift = estimate_drift(table)
    seconds = time.perf_counter() - started
    corrected = undrift(table, drift)
    truly = without_true_drift(table, experiment.drift)
    drift_rows = {
        "pixelreg": {
            "segment_frames": drift.segment,
            "segments": len(drift.centres),
            "residual_nm": round(residual_nm(np.column_stack([drift.x, drift.y]), experiment.drift), 3),
            "seconds": round(seconds, 2),
        }
    }
    for segment in PICASSO_SEGMENTS:
        if int(table["frame"].max()) + 1 >= 2 * segment:
            drift_rows[f"Picasso-like, {segment}"] = {
                "segment_frames": segment,
                "residual_nm": round(residual_nm(picasso_like(table, segment), experiment.drift), 3),
            }
    merged = merge_events(corrected)
    rows = merged.event
    true_x = np.bincount(rows, experiment.true_x) / np.bincount(rows)
    true_y = np.bincount(rows, experiment.true_y) / np.bincount(rows)
    shift = np.array([np.mean(corrected["x"] - truly["x"]), np.mean(corrected["y"] - truly["y"])])
    mse = ((merged.table["x"] - shift[0] - true_x) ** 2 + (merged.table["y"] - shift[1] - true_y) ** 2) / 2
    bound = float(np.sqrt(np.mean(merged.table["uncertainty"] ** 2)))
    rmse = float(np.sqrt(mse.mean()))
    frc = {
        name: ring_correlation(t, PIXEL_NM)
        for name, t in (("raw", table), ("corrected", corrected), ("true drift", truly))
    }
    resolution = {name: f.resolution_nm for name, f in frc.items()}
    precision = nena(table, PIXEL_NM)
    uncertainty = table["uncertainty"] * PIXEL_NM
    scores: dict[str, Any] = {
        "localizations": len(table),
        "frames": int(table["frame"].max()) + 1,
        "drift_span_nm": [round(float(np.ptp(experiment.drift[:, k])) * PIXEL_NM, 1) for k in (0, 1)],
        "drift": drift_rows,
        "merge": {
            "rows": len(merged.table),
            "true_events": experiment.events,
            "rows_over_events": round(len(merged.table) / experiment.events, 4),
            "rmse_nm": round(rmse * PIXEL_NM, 3),
            "combined_bound_nm": round(bound * PIXEL_NM, 3),
            "rmse_over_bound": round(rmse / bound, 4),
        },
        "frc_nm": {name: None if value is None else round(value, 2) for name, value in resolution.items()},
        "frc_corrected_over_true": None
        if resolution["corrected"] is None or resolution["true drift"] is None
        else round(resolution["corrected"] / resolution["true drift"], 4),
        "nena_nm": round(precision.precision_nm, 3),
        "true_mean_precision_nm": round(float(uncertainty.mean()), 3),
        "true_rms_precision_nm": round(float(np.sqrt((uncertainty**2).mean())), 3),
    }
    scores["nena_over_mean"] = round(precision.precision_nm / float(uncertainty.mean()), 4)
    scores["nena_over_rms"] = round(precision.precision_nm / float(np.sqrt((uncertainty**2).mean())), 4)
    curves = {"frc": frc, "tables": (table, corrected)}
    return scores, drift, curves


def run_post_bench(say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every experiment's scores (for post.json) and what the figures draw."""
    results: dict[str, Any] = {"pixel_size_nm": PIXEL_NM, "experiments": {}}
    drawn: dict[str, Any] = {}
    for name, settings in EXPERIMENTS.items():
        say(f"[bold]{name}[/bold]: simulating {settings['frames']:,} frames and scoring")
        experiment = blinking_experiment(**settings)
        scores, drift, curves = score_experiment(experiment)
        results["experiments"][name] = {"settings": settings, **scores}
        drawn[name] = {"experiment": experiment, "drift": drift, **curves}
    results["goals"] = goals(results["experiments"])
    return results, drawn


def goals(experiments: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each experiment's figure beside its mark."""
    verdict: dict[str, Any] = {}
    for name, e in experiments.items():
        picasso = [row["residual_nm"] for key, row in e["drift"].items() if key != "pixelreg"]
        verdict[name] = {
            "drift_within_3_nm": e["drift"]["pixelreg"]["residual_nm"] <= 3.0,
            "drift_beats_picasso_like": all(e["drift"]["pixelreg"]["residual_nm"] < r for r in picasso),
            "merge_rows_within_5_percent": abs(e["merge"]["rows_over_events"] - 1) <= 0.05,
            "merge_rmse_within_10_percent_of_bound": abs(e["merge"]["rmse_over_bound"] - 1) <= 0.10,
            "frc_corrected_better_than_raw": (e["frc_nm"]["corrected"] or np.inf)
            < (e["frc_nm"]["raw"] or np.inf),
            "frc_within_10_percent_of_true": e["frc_corrected_over_true"] is not None
            and abs(e["frc_corrected_over_true"] - 1) <= 0.10,
            "nena_within_10_percent_of_mean_precision": abs(e["nena_over_mean"] - 1) <= 0.10,
        }
    return verdict


def run_movie_stage(
    out: Path, epochs: int, device: str, reporter: Any, say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chain from a movie: the first experiment's molecules rendered through the high-NA pupil
    on an sCMOS (pixelreg's renderer makes none of it), calibrated with the camera's gain and
    offset given (as a user who knows the camera), a model trained on the calibration, the movie
    localized, and its table through drift, merge and resolution, scored against the truth."""
    from pixelreg.bench.calibration import localized_movie
    from pixelreg.simulate.foreign import render_blinking_movie

    settings = EXPERIMENTS["filaments"]
    experiment = blinking_experiment(**settings)
    table = experiment.table
    say("[bold]movie[/bold]: rendering the filaments through the pupil")
    movie = render_blinking_movie(
        experiment.sites, experiment.molecule, table["frame"], table["photons"], experiment.drift, 64
    )
    say("[bold]movie[/bold]: calibrating, training and localizing")
    found, train_seconds = localized_movie(movie, out, epochs, device, reporter)
    say("[bold]movie[/bold]: correcting")
    frame = table["frame"]
    seen_where = np.column_stack([experiment.true_x, experiment.true_y]) + experiment.drift[frame]
    truth = Localizations.from_fields("truth", COLUMNS, frame=frame, x=seen_where[:, 0], y=seen_where[:, 1])
    seen = _paired(found, truth, table["photons"])
    drift = estimate_drift(found)
    corrected = undrift(found, drift)
    truly = without_true_drift(found, experiment.drift)
    merged = merge_events(corrected)
    frc = {
        name: ring_correlation(t, PIXEL_NM)
        for name, t in (("raw", found), ("corrected", corrected), ("true drift", truly))
    }
    resolution = {name: f.resolution_nm for name, f in frc.items()}
    precision = nena(found, PIXEL_NM)
    scores = {
        "settings": settings,
        "train_seconds": train_seconds,
        "localizations": len(found),
        "true_localizations": len(table),
        "recall": round(seen["recall"], 4),
        "precision": round(seen["precision"], 4),
        "rmse_nm": round(seen["rmse_px"] * PIXEL_NM, 3),
        "error_over_uncertainty": round(seen["error_over_uncertainty"], 3),
        "photons_over_truth": round(seen["photons_over_truth"], 3),
        "drift": {
            "segment_frames": drift.segment,
            "residual_nm": round(residual_nm(np.column_stack([drift.x, drift.y]), experiment.drift), 3),
        },
        "merge": {
            "rows": len(merged.table),
            "true_events": experiment.events,
            "rows_over_events": round(len(merged.table) / experiment.events, 4),
        },
        "frc_nm": {name: None if value is None else round(value, 2) for name, value in resolution.items()},
        "nena_nm": round(precision.precision_nm, 3),
    }
    return scores, {"frc": frc}


def _paired(found: Localizations, truth: Localizations, photons: np.ndarray) -> dict[str, float]:
    """The model's localizations paired with the true ones (`truth`, and the `photons` of each)
    within half a pixel (`pair_greedy`): recall, precision, the rmse per axis, how far the errors
    are from the uncertainties the model gave them (the median |error| over the median of a
    Gaussian's of that sigma: 1 where they are honest), and the median of their photons over the
    true ones."""
    frames = int(max(found["frame"].max(initial=0), truth["frame"].max(initial=0))) + 1
    ours, our_rows = found.by_frame(frames)
    theirs, their_rows = truth.by_frame(frames)
    paired = pair_greedy(ours, theirs, 0.5)
    frame, spot = np.nonzero(paired >= 0)
    mine, real = our_rows[frame, paired[frame, spot]], their_rows[frame, spot]
    error = np.column_stack([found["x"][mine] - truth["x"][real], found["y"][mine] - truth["y"][real]])
    uncertainty = np.repeat(found["uncertainty"][mine], 2)
    return {
        "recall": len(error) / len(truth),
        "precision": len(error) / max(len(found), 1),
        "rmse_px": float(np.sqrt((error**2).mean())),
        # |error| / uncertainty has a median of 0.674 where the uncertainties are honest
        "error_over_uncertainty": float(np.nanmedian(np.abs(error).ravel() / uncertainty) / 0.6745),
        "photons_over_truth": float(np.nanmedian(found["photons"][mine] / photons[real])),
    }
