"""`pixelreg bench calibration`: the real-data workflow (calibrate, train --spec, predict) on
movies that other renderers made, against a model trained on their true parameters (where they
are photon counts) and against trackpy.locate and photutils' DAOStarFinder where they are
installed.

Each movie's first TUNING_FRAMES frames are its calibration frames: `calibrate` reads them alone,
the peers' thresholds are chosen on them (with the truth, their best Jaccard index), and every
method is scored on the frames after them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.bench.defaults import CALIBRATION_EPOCHS
from pixelreg.evaluate.matching import pair_greedy
from pixelreg.evaluate.metrics import best_threshold, keep_above, score_thresholds, summarize, threshold_sweep
from pixelreg.evaluate.photometry import measured
from pixelreg.fit.bounds import crlb
from pixelreg.fit.calibrate import Calibration, calibrate, training_spec
from pixelreg.fit.peers import daofind_available, daofind_detections, trackpy_available, trackpy_detections
from pixelreg.io.checkpoints import load_model
from pixelreg.io.locs import Localizations
from pixelreg.nn.config import TrainConfig
from pixelreg.nn.inference import counted_points, set_precision
from pixelreg.nn.train import Reporter, train
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.foreign import ForeignMovie, render_grey_spots, render_smlm, render_stars
from pixelreg.simulate.psf import SampledPSF
from pixelreg.simulate.spec import DataSpec

TUNING_FRAMES = 20
TOLERANCE_PX = 1.0  # a detection within this of a true spot finds it (the movie bench's)
RENDERERS: dict[str, tuple[Callable[..., ForeignMovie], float]] = {
    "smlm-emccd": (render_smlm, 100.0),  # (renderer, the EM gain a user would give)
    "stars-scmos": (render_stars, 0.0),
    # 20 frames to calibrate on, of 128x128, 2 e-/ADU, baseline 100, background 12 to 18 photons
    "stars-scmos-short": (
        functools.partial(
            render_stars, frames=70, size=128, n_stars=30, baseline=100, e_per_adu=2.0, background=(12, 18)
        ),
        0.0,
    ),
    # trackpy's own kind of test data: 12-bit grey levels, uniform noise, no photon statistics
    "grey-12bit": (functools.partial(render_grey_spots, frames=70, size=128, spots=30), 0.0),
}
# the README's workflow: the offsets model read pixel by pixel and once (`train --no-mirror`); 2 x 2
# cells (`--stride 2`) train in half the time but lose Jaccard index and rmse (docs/benchmarks.md)
MODEL_ARGS = {"mirror": False}
JI_GOAL_POINTS = 2.0  # calibrated within this many points of the true parameters' model ...
RMSE_GOAL = 1.10  # ... and within this factor of its rmse


def true_spec(movie: ForeignMovie, frame_pixels: int) -> DataSpec | None:
    """What a model trained on the renderer's true parameters trains on: crops as `calibrate`
    writes them, every value from the renderer's truth; None for a movie of no photon counts."""
    truth = movie.truth
    if "e_per_adu" not in truth:
        return None
    return training_spec(
        truth["spots_per_frame"],
        frame_pixels,
        blur=truth["sigma"],
        photons=truth["photons_min"],
        photons_max=truth["photons_max"],
        background_photons=truth["background_min"],
        background_photons_max=truth["background_max"],
        qe=truth["qe"],
        em_gain=truth["em_gain"],
        read_noise=truth["read_noise"],
        e_per_adu=truth["e_per_adu"],
        baseline=truth["baseline"],
    )


def score_method(
    found: np.ndarray, truth: np.ndarray, bound: np.ndarray, size: int, seconds: float
) -> tuple[dict[str, Any], np.ndarray]:
    """A method's scores on the scored frames, with its rmse against the Cramér-Rao bound of
    the spots it found; and each true spot's error (N, K), NaN where it found none."""
    scores = summarize(found, truth, size, size, variable=True, tolerance=TOLERANCE_PX)
    row = {key: scores[key] for key in ("jaccard", "recall", "precision", "rmse_px", "efficiency")}
    row["frames_per_second"] = round(len(found) / seconds, 2) if seconds > 0 else None
    paired = pair_greedy(found, truth, TOLERANCE_PX)
    errors = np.full(paired.shape, np.nan)
    rows, cols = np.nonzero(paired >= 0)
    errors[rows, cols] = np.linalg.norm(found[rows, paired[rows, cols]] - truth[rows, cols], axis=-1)
    hit = np.isfinite(errors)
    if hit.any() and row["rmse_px"] is not None:
        row["rmse_over_bound"] = round(float(row["rmse_px"] / np.sqrt(np.mean(bound[hit] ** 2))), 3)
    return row, errors


def true_camera(truth: dict[str, Any]) -> Camera:
    """The camera a foreign movie of photon counts was rendered through, from its truth."""
    return Camera(
        qe=truth["qe"], em_gain=truth["em_gain"], read_noise=truth["read_noise"],
        e_per_adu=truth["e_per_adu"], baseline=truth["baseline"],
    )  # fmt: skip


def spot_bounds(movie: ForeignMovie, frames: slice, psf: SampledPSF | None = None) -> np.ndarray:
    """(N, K) the Cramér-Rao bound (px, both axes together) of each true spot of the frames,
    alone on its background: its true photons, the background at its place, the true camera;
    photons, background and position unknown to the estimator. Through `psf` at each spot's
    true depth where given (the depth known), else the true Gaussian."""
    truth = movie.truth
    points, photons = movie.points[frames], movie.photons[frames]
    present = np.isfinite(points[..., 0])
    if "e_per_adu" not in truth:  # not photon counts: no bound
        return np.full(present.shape, np.nan)
    where = np.where(present[..., None], points, 0.0)
    size = movie.frames.shape[1:]
    rows = np.clip(np.rint(where[..., 1]).astype(int), 0, size[0] - 1)
    cols = np.clip(np.rint(where[..., 0]).astype(int), 0, size[1] - 1)
    camera = true_camera(truth)
    light = np.where(present, photons, 1.0), movie.background[rows, cols]
    if psf is not None and movie.z is not None:
        free = (True, True, True, True, False)
        bound = crlb(where, *light, 1.0, camera, size, free, psf, movie.z[frames])
    else:
        bound = crlb(where, *light, truth["sigma"], camera, size)
    return np.where(present, np.hypot(bound[..., 0], bound[..., 1]), np.nan)


def same_spots(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    """Both methods' rmse on the true spots that both found: the same spots, so that one that
    leaves out the hard ones gains nothing by it."""
    both = np.isfinite(ours) & np.isfinite(theirs)
    if not both.any():
        return {"spots": 0, "ours_px": None, "theirs_px": None}
    return {
        "spots": int(both.sum()),
        "ours_px": round(float(np.sqrt(np.mean(ours[both] ** 2))), 4),
        "theirs_px": round(float(np.sqrt(np.mean(theirs[both] ** 2))), 4),
    }


def _tuned(
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], frames: np.ndarray, truth: np.ndarray
) -> tuple[np.ndarray, float]:
    """A peer's detections on the scored frames, its score threshold chosen on the tuning frames
    for the best Jaccard index; and the seconds it took on the scored frames."""
    points, scores = detect(frames[:TUNING_FRAMES])
    level = best_threshold(
        threshold_sweep(points, scores, truth[:TUNING_FRAMES], score_thresholds(scores), TOLERANCE_PX)
    )
    started = time.perf_counter()
    points, scores = detect(frames[TUNING_FRAMES:])
    seconds = time.perf_counter() - started
    return keep_above(points, scores, level), seconds


def run_calibration_bench(
    out: str | Path,
    epochs: int = CALIBRATION_EPOCHS,
    device: str = "auto",
    reporter: Reporter | None = None,
    say: Callable[[str], None] = lambda message: None,
    renderers: dict[str, tuple[Callable[..., ForeignMovie], float]] | None = None,
    **render_options: Any,
) -> dict[str, Any]:
    """For each foreign renderer: render its movie, calibrate on it, train on the calibrated and
    on the true parameters, localize with both and with the peers; the estimates against the
    truth and every method's scores."""
    out = Path(out)
    fit = functools.partial(_train_on, epochs=epochs, device=device, reporter=reporter)
    results: dict[str, Any] = {}
    for name, (render, em_gain) in (renderers or RENDERERS).items():
        say(f"[{name}] rendering")
        movie = render(**render_options)
        results[name] = _bench_movie(name, movie, em_gain, out / name, fit, say)
    return results


def _bench_movie(
    name: str,
    movie: ForeignMovie,
    em_gain: float,
    out: Path,
    fit: Callable[[DataSpec, Path], tuple[Path, float]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One renderer's movie: calibrate on it, train (`fit`) on the calibrated and on the true
    parameters into out/<kind>, localize with both and with the peers; the estimates, every
    method's scores and whether the goal is met."""
    frames, truth = movie.frames, movie.points
    size = frames.shape[-1]
    started = time.perf_counter()
    calibration = calibrate(frames[:TUNING_FRAMES], em_gain=em_gain)
    calibrate_seconds = time.perf_counter() - started
    calibration.require_twin()
    specs = {"calibrated": calibration.spec, "true": true_spec(movie, frames.shape[1] * frames.shape[2])}
    rows: dict[str, Any] = {}
    errors: dict[str, np.ndarray] = {}
    trained: dict[str, float] = {}
    scored = truth[TUNING_FRAMES:]
    bound = spot_bounds(movie, slice(TUNING_FRAMES, None))
    for kind, spec in specs.items():
        if spec is None:
            continue
        say(f"[{name}] training on the {kind} parameters")
        checkpoint, trained[kind] = fit(spec, out / kind)
        rows[f"pixelreg ({kind})"], errors[kind] = _localized(checkpoint, frames, scored, bound, movie)
    for peer, (row, peer_errors) in _peer_rows(name, movie, calibration, scored, bound, say).items():
        rows[peer], errors[peer] = row, peer_errors
    for peer in ("trackpy", "DAOStarFinder"):
        if peer in rows:
            rows[peer]["same_spots"] = same_spots(errors["calibrated"], errors[peer])
    return {
        "frames": int(len(frames)),
        "tuning_frames": TUNING_FRAMES,
        "size": int(size),
        "truth": movie.truth,
        "calibration": calibration.summary(),
        "calibrate_seconds": round(calibrate_seconds, 1),
        "train_seconds": trained,
        "methods": rows,
        "goal_met": _goal_met(rows),
    }


def _train_on(
    spec: DataSpec, run_dir: Path, epochs: int, device: str, reporter: Reporter | None
) -> tuple[Path, float]:
    """Train the README's model (offsets, `--no-mirror`) on `spec` into `run_dir`: its best
    checkpoint, and the seconds training took."""
    config = TrainConfig(
        model="offsets",
        epochs=epochs,
        device=device,
        spec=spec.to_dict(),
        model_args=dict(MODEL_ARGS),
    )
    started = time.perf_counter()
    checkpoint = train(config, run_dir, reporter).best_path
    return checkpoint, round(time.perf_counter() - started, 1)


def localized_movie(
    movie: ForeignMovie, out: Path, epochs: int, device: str, reporter: Reporter | None
) -> tuple[Localizations, float]:
    """A movie run as a user who knows the camera runs it: written to out/movie.tif, calibrated
    on its first 200 frames (calibrate's default) with the camera's offset and gain given, the README's model trained on the calibration (out/run), and the file localized as
    `predict` does; the table and the seconds training took."""
    import tifffile

    from pixelreg.io.frames import open_frames
    from pixelreg.localize import Localizer, whole_table

    path = out / "movie.tif"
    tifffile.imwrite(path, movie.frames)
    calibration = calibrate(
        movie.frames[:200], baseline=movie.truth["baseline"], e_per_adu=movie.truth["e_per_adu"]
    )
    checkpoint, seconds = _train_on(calibration.spec, out / "run", epochs, device, reporter)
    localizer = Localizer.load(checkpoint, device)
    return whole_table(localizer, [open_frames(path, counts=True)], lambda count: None), seconds


def _localized(
    checkpoint: Path, frames: np.ndarray, truth: np.ndarray, bound: np.ndarray, movie: ForeignMovie
) -> tuple[dict[str, Any], np.ndarray]:
    """A trained model's localizations of the scored frames on the CPU, in the precision `auto`
    chooses as `predict` does: timed and scored (see `score_method`); of a movie of photon
    counts, also the median of each paired spot's measured photons over its true ones."""
    model, payload = load_model(checkpoint, "cpu")
    set_precision(model, "auto", "cpu")
    started = time.perf_counter()
    found, _ = counted_points(model, frames[TUNING_FRAMES:])
    seconds = time.perf_counter() - started
    row, errors = score_method(found, truth, bound, frames.shape[-1], seconds)
    spec = DataSpec.from_dict(payload["data_spec"])
    if "e_per_adu" in movie.truth and spec.camera_model:
        images = frames[TUNING_FRAMES:]
        photons = measured(spec.camera.photons(images), found, spec)["photons"]
        paired = pair_greedy(found, truth, TOLERANCE_PX)
        rows, cols = np.nonzero(paired >= 0)
        ratio = photons[rows, paired[rows, cols]] / movie.photons[TUNING_FRAMES:][rows, cols]
        row["photons_over_truth"] = round(float(np.nanmedian(ratio)), 3) if ratio.size else None
    return row, errors


def _peer_rows(
    name: str,
    movie: ForeignMovie,
    calibration: Calibration,
    truth: np.ndarray,
    bound: np.ndarray,
    say: Callable[[str], None],
) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """trackpy.locate (on photons, with the calibrated camera) and DAOStarFinder (its FWHM from
    the calibrated blur), each installed one tuned on the first frames: scored (see `score_method`)."""
    frames, size = movie.frames, movie.frames.shape[-1]
    peers: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
    sigma = calibration.estimates["blur"].value
    if trackpy_available():
        say(f"[{name}] trackpy.locate, minmass tuned on the first {TUNING_FRAMES} frames")
        photons = (frames.astype(np.float32) - calibration.spec.baseline) * calibration.spec.e_per_adu
        found, seconds = _tuned(
            functools.partial(trackpy_detections, spec=calibration.spec), photons, movie.points
        )
        peers["trackpy"] = score_method(found, truth, bound, size, seconds)
    if daofind_available():
        say(f"[{name}] DAOStarFinder, threshold tuned on the first {TUNING_FRAMES} frames")
        found, seconds = _tuned(functools.partial(daofind_detections, sigma=sigma), frames, movie.points)
        peers["DAOStarFinder"] = score_method(found, truth, bound, size, seconds)
    return peers


def _goal_met(rows: dict[str, Any]) -> bool:
    """Whether the calibrated model comes within JI_GOAL_POINTS of the true parameters' Jaccard
    index and within RMSE_GOAL of its rmse, and beats every peer on both."""
    ours = rows["pixelreg (calibrated)"]
    best = rows.get("pixelreg (true)", ours)  # a movie of no photon counts has no true parameters
    peers = [rows[p] for p in ("trackpy", "DAOStarFinder") if p in rows]
    met = bool(
        (ours["jaccard"] or 0) >= (best["jaccard"] or 0) - JI_GOAL_POINTS / 100
        and ours["rmse_px"] is not None
        and best["rmse_px"] is not None
        and ours["rmse_px"] <= RMSE_GOAL * best["rmse_px"]
        and all((ours["jaccard"] or 0) > (p["jaccard"] or 0) for p in peers)
        and all(p["rmse_px"] is None or ours["rmse_px"] < p["rmse_px"] for p in peers)
    )
    return met and math.isfinite(ours["rmse_px"] or math.nan)
