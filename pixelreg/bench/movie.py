"""`pixelreg bench movie`: `predict` on a movie as microscopists record them, against trackpy.

A 16-bit TIFF of 512x512 frames with about 600 spots each, made by the camera model,
is localized by a counting model trained for its conditions, through the same path as
`pixelreg predict` (TIFF read a chunk at a time, frames in tiles, photometry per spot), and by
`trackpy.locate` where trackpy is installed, its `minmass` chosen on the first frames for the
best Jaccard index. Both are timed on the same frames and scored against the truth.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelreg.bench.defaults import (
    MOVIE_CHANNELS,
    MOVIE_CONDITIONS,
    MOVIE_EPOCHS,
    MOVIE_FRAMES,
    MOVIE_SIZE,
    MOVIE_SPOTS,
    MOVIE_STRIDE,
    MOVIE_TRAIN_N,
    MOVIE_TRAIN_SIZE,
    MOVIE_TUNING_FRAMES,
)
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import PIXEL_SIZE_NM, TOLERANCE_PX
from pixelreg.evaluate.metrics import best_threshold, keep_above, score_thresholds, summarize, threshold_sweep
from pixelreg.evaluate.photometry import measured
from pixelreg.fit.background import background_map
from pixelreg.fit.peers import trackpy_available, trackpy_detections
from pixelreg.io.checkpoints import load_model
from pixelreg.io.files import write_atomic
from pixelreg.io.frames import open_frames
from pixelreg.localize import Localizer
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.config import TrainConfig
from pixelreg.nn.inference import (
    can_count,
    images_to_tensor,
    kept_detections,
    photometry_spec,
    resolve_device,
    set_precision,
)
from pixelreg.nn.offsets import OffsetLocalizer
from pixelreg.nn.readout import read_detections
from pixelreg.nn.train import Reporter, train
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import DataSpec

MOVIE_SPEEDUP = 5.0  # the goal: this many times trackpy's frames per second, scoring better ...
# ... trackpy as `pip install trackpy` runs it: its pure-Python engine; numba, an accelerator that
# trackpy leaves to the user, makes it several times faster, and the bench reports that ratio too
PYTHON_ENGINE_FRAMES = 50  # with numba installed, trackpy's pure-Python engine is timed on this many frames


def movie_spec(frames: int = MOVIE_FRAMES, size: int = MOVIE_SIZE, spots: int = MOVIE_SPOTS) -> DataSpec:
    """The movie: `frames` frames of size x size with about `spots` spots each (+-10%), seed 1."""
    spread = max(1, spots // 10)
    return DataSpec(
        n=frames,
        height=size,
        width=size,
        points=max(0, spots - spread),
        points_max=spots + spread,
        holdout="none",
        val_fraction=0.0,
        test_fraction=0.0,
        seed=1,
        **MOVIE_CONDITIONS,  # type: ignore[arg-type]  # floats for float fields
    )


def training_spec(movie: DataSpec, n: int = MOVIE_TRAIN_N) -> DataSpec:
    """Crops of the movie's conditions for training, up to twice the movie's density of spots."""
    density = (movie.points_max or movie.points) / (movie.height * movie.width)
    most = max(1, round(2 * density * MOVIE_TRAIN_SIZE**2))
    return movie.with_(
        n=n,
        height=MOVIE_TRAIN_SIZE,
        width=MOVIE_TRAIN_SIZE,
        points=0,
        points_max=most,
        val_fraction=0.1,
        test_fraction=0.0,
        seed=0,
    )


def run_movie(
    out: str | Path,
    epochs: int = MOVIE_EPOCHS,
    device: str = "auto",
    frames: int = MOVIE_FRAMES,
    size: int = MOVIE_SIZE,
    spots: int = MOVIE_SPOTS,
    train_n: int = MOVIE_TRAIN_N,
    checkpoint: Path | None = None,
    reporter: Reporter | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train the movie's model (or take a counting model of the camera model from `checkpoint`),
    write the movie, localize it as `predict` does and with trackpy: frames per second, Mpx
    per second, Jaccard index and rmse of each."""
    import tifffile

    out = Path(out)
    spec = movie_spec(frames, size, spots)
    torch_device = resolve_device(device)
    train_seconds = None
    if checkpoint is None:
        checkpoint, train_seconds = _train_movie_model(out, spec, epochs, device, train_n, reporter, say)
    model, payload = load_model(checkpoint, torch_device)
    if not (can_count(model) and model.camera is not None):
        raise PixelregError(
            f"{checkpoint}: the movie bench needs a counting model of camera images (--points LO:HI, --photons)"
        )
    say(f"Rendering the movie: {frames} frames of {size}x{size}, about {spots} spots each")
    movie = make_dataset(spec)
    path = write_atomic(
        out / "movie.tif", lambda tmp: tifffile.imwrite(tmp, movie.images, photometric="minisblack")
    )
    truth = movie.points
    model_spec = DataSpec.from_dict(payload["data_spec"])
    precision, rows, stages = _pixelreg_rows(model, path, movie.images, truth, torch_device, model_spec, say)
    network = network_profile(model, movie.images[0], torch_device)
    if torch_device.type == "cpu":
        say(f"Localizing again, to a CSV: in one process, then on {CLUSTER_WORKERS} Dask workers")
        rows.update(_file_rows(checkpoint, path, truth, say))
    if trackpy_available():
        rows["trackpy"] = _trackpy_row(movie.images, truth, spec, say)
    results = {
        "spec": spec.to_dict(),
        "frames": frames,
        "size": size,
        "spots_per_frame": round(float(np.isfinite(truth[..., 0]).sum(1).mean()), 1),
        "model": {"path": str(checkpoint), "args": payload["model_args"], "train_seconds": train_seconds},
        "movie_bytes": path.stat().st_size,
        "precision": precision,
        "stages_ms_per_frame": stages,
        "network": network,
        "methods": rows,
        "speedup_goal": MOVIE_SPEEDUP,
    }
    if "trackpy" in rows:
        results.update(_against_trackpy(rows["pixelreg"], rows["trackpy"]))
    path.unlink()  # 100 MB of noise that anyone can make again with the same command
    return results


def _train_movie_model(
    out: Path,
    spec: DataSpec,
    epochs: int,
    device: str,
    train_n: int,
    reporter: Reporter | None,
    say: Callable[[str], None],
) -> tuple[Path, float]:
    """Train the offsets model for the movie's conditions on `train_n` crops, into out/model:
    its best checkpoint, and the seconds training took."""
    config = TrainConfig(
        model="offsets",
        epochs=epochs,
        device=device,
        spec=training_spec(spec, train_n).to_dict(),
        model_args={"stride": MOVIE_STRIDE, "channels": MOVIE_CHANNELS, "mirror": False},
    )
    say(f"Training the movie's model ({config.model_args}) on {train_n:,} crops of {MOVIE_TRAIN_SIZE}px")
    started = time.perf_counter()
    checkpoint = train(config, out / "model", reporter).best_path
    return checkpoint, round(time.perf_counter() - started, 1)


def _pixelreg_rows(
    model: PointModel,
    path: Path,
    images: np.ndarray,
    truth: np.ndarray,
    device: torch.device,
    spec: DataSpec,
    say: Callable[[str], None],
) -> tuple[str, dict[str, Any], dict[str, float]]:
    """pixelreg on the movie as `predict` runs it, in the precision `auto` chooses and, if that
    is not float32, again in float32 to show what the faster arithmetic costs: the precision,
    the rows of each, and the time of each stage per frame."""
    rows: dict[str, Any] = {}
    precision = set_precision(model, "auto", device)
    say(f"Localizing with pixelreg (as `pixelreg predict` does: convolutions in {precision})")
    rows["pixelreg"] = _localized(model, path, device, spec, truth)
    stages = stage_times(model, images[:PROFILE_FRAMES], device, spec)
    if precision != "float32":  # what the faster arithmetic costs, if anything
        say("Localizing with pixelreg again, in float32 (predict --precision float32)")
        set_precision(model, "float32", device)
        rows["pixelreg float32"] = _localized(model, path, device, spec, truth)
    return precision, rows, stages


def _trackpy_row(
    images: np.ndarray, truth: np.ndarray, spec: DataSpec, say: Callable[[str], None]
) -> dict[str, Any]:
    """trackpy.locate on the movie, its `minmass` chosen on the first frames for the best
    Jaccard index: timed and scored, and with numba installed also timed in its pure-Python
    engine, as `pip install trackpy` runs it."""
    frames, size = spec.n, spec.width
    say(f"Localizing with trackpy.locate (minmass chosen on the first {MOVIE_TUNING_FRAMES} frames)")
    tune = slice(0, min(MOVIE_TUNING_FRAMES, frames))
    points, scores = trackpy_detections(images[tune].astype(np.float32), spec)
    levels = score_thresholds(scores)
    minmass = best_threshold(threshold_sweep(points, scores, truth[tune], levels, TOLERANCE_PX))
    started = time.perf_counter()
    with default_sigterm():
        points, scores = trackpy_detections(images.astype(np.float32), spec, minmass, processes="auto")
    seconds = time.perf_counter() - started
    row = _row(keep_above(points, scores, minmass), truth, seconds, frames, size)
    row["minmass"] = float(minmass)
    row["engine"] = "numba" if _has_numba() else "python"
    if _has_numba():  # trackpy without numba (its `pip install trackpy`): the same spots, slower
        some = images[: min(PYTHON_ENGINE_FRAMES, frames)].astype(np.float32)
        started = time.perf_counter()
        with default_sigterm():
            trackpy_detections(some, spec, minmass, processes="auto", engine="python")
        row["python_engine_frames_per_second"] = round(len(some) / (time.perf_counter() - started), 2)
    return row


def _against_trackpy(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """pixelreg's speedup over trackpy as pip installs it (its Python engine) and, with numba,
    over numba too; and whether the goal is met: that speedup, a higher Jaccard index and a
    lower rmse."""
    python = theirs.get("python_engine_frames_per_second", theirs["frames_per_second"])
    speedup = ours["frames_per_second"] / python
    results: dict[str, Any] = {"speedup": round(speedup, 2)}  # over trackpy's python engine
    if theirs["engine"] == "numba":
        results["speedup_over_numba"] = round(ours["frames_per_second"] / theirs["frames_per_second"], 2)
    results["goal_met"] = bool(
        speedup >= MOVIE_SPEEDUP
        and (ours["jaccard"] or 0) > (theirs["jaccard"] or 0)
        and ours["rmse_px"] is not None
        and (theirs["rmse_px"] is None or ours["rmse_px"] < theirs["rmse_px"])
    )
    return results


PROFILE_FRAMES = 20  # `predict`'s stages are timed apart on this many frames
CLUSTER_WORKERS = 2  # `predict --workers`: this machine's cores, one single-threaded worker each
MATMUL_SIDE = 2048  # the matrix product that measures what the device's arithmetic can do


def network_profile(model: PointModel, frame: np.ndarray, device: torch.device) -> dict[str, float]:
    """The network's work on one frame as `predict` runs it (FLOPs counted by torch's
    FlopCounterMode), the rate it achieves, and the rate of a large float32 matrix product on
    the same device: how near the network runs to what the arithmetic can do."""
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, OffsetLocalizer):
        raise TypeError("the network profile is that of a counting (offsets) model")
    frames = images_to_tensor(frame[None], device, model.camera)
    level = background_map(frames)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model.output_maps(frames, level)
        flops = counter.get_total_flops()
        network = _best_seconds(lambda: model.output_maps(frames, level), device)
        a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
        matmul = _best_seconds(lambda: a @ a, device)
    return {
        "gflop_per_frame": round(flops / 1e9, 3),
        "ms_per_frame": round(1000 * network, 2),
        "gflops": round(flops / network / 1e9, 1),
        "matmul_gflops": round(2 * MATMUL_SIDE**3 / matmul / 1e9, 1),
        "threads": torch.get_num_threads(),
    }


def _best_seconds(work: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    """The least time of `repeats` runs of `work`, after one to warm up."""
    work()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        _synchronized(device)
        best = min(best, time.perf_counter() - started)
    return best


def _file_rows(checkpoint: Path, path: Path, truth: np.ndarray, say: Callable[[str], None]) -> dict[str, Any]:
    """`predict --out` on the movie in one process and with `--workers` (a local Dask cluster;
    its start included): frames/s over the wall time, and each worker's over its busy time."""
    from pixelreg.archive.predict import localize_archive
    from pixelreg.archive.work import Settings, plan_chunks
    from pixelreg.io.runs import resolve_checkpoint
    from pixelreg.localize import write_file

    checkpoint = resolve_checkpoint(checkpoint)
    localizer = Localizer.load(checkpoint, "cpu")
    movies = [open_frames(path, counts=True)]
    one, cluster = path.with_name("one.csv"), path.with_name("cluster.csv")
    size = movies[0].width
    started = time.perf_counter()
    write_file(localizer, movies, one, "csv", 100.0)
    rows = {"pixelreg --out, one process": _scored_file(one, truth, time.perf_counter() - started, size)}
    settings = Settings(str(checkpoint.resolve()), "cpu")
    chunks = plan_chunks(movies, max(1, movies[0].count // (4 * CLUSTER_WORKERS)))  # 4 chunks a worker
    started = time.perf_counter()
    _, report = localize_archive(
        localizer,
        settings,
        movies,
        chunks,
        cluster,
        lambda source: write_file(localizer, movies, cluster, "csv", 100.0, source=source),
        lambda count: None,
        workers=CLUSTER_WORKERS,
    )
    row = _scored_file(cluster, truth, time.perf_counter() - started, size)
    row.update({key: report.as_dict()[key] for key in ("workers", "stage_seconds")})
    rows[f"pixelreg --out --workers {CLUSTER_WORKERS}"] = row
    return rows


def _scored_file(table: Path, truth: np.ndarray, seconds: float, size: int) -> dict[str, Any]:
    """The row of a table of frames size x size written in `seconds` (`_row`); the file removed."""
    from pixelreg.io.tables import read_table

    frames = truth.shape[0]
    found, _ = read_table(table).by_frame(frames)
    table.unlink()
    return _row(found, truth, seconds, frames, size)


def stage_times(
    model: PointModel, images: np.ndarray, device: torch.device, spec: DataSpec
) -> dict[str, float]:
    """Milliseconds per frame of each stage of `predict` on frames `images`, one at a time, as
    it reads them: the profile behind its frames per second."""
    spent = dict.fromkeys(("background map", "network", "readout", "photometry"), 0.0)
    camera_spec = photometry_spec(model, spec)
    if not isinstance(model, OffsetLocalizer) or camera_spec is None:
        raise TypeError("the stages are those of a counting model of camera images")
    with torch.inference_mode():
        for frame in images:
            started = time.perf_counter()
            frames = images_to_tensor(frame[None], device, model.camera)
            level = background_map(frames)
            _synchronized(device)
            spent["background map"] += time.perf_counter() - started
            started = time.perf_counter()
            maps = model.output_maps(frames, level)
            _synchronized(device)
            spent["network"] += time.perf_counter() - started
            started = time.perf_counter()
            points, confidence = read_detections(maps, model.CANDIDATE_FLOOR, model.merge_radius)
            found, _ = kept_detections(model, frame[None], points.cpu().numpy(), confidence.cpu().numpy())
            spent["readout"] += time.perf_counter() - started
            started = time.perf_counter()
            measured(camera_spec.camera.photons(frame[None]), found, camera_spec)
            spent["photometry"] += time.perf_counter() - started
    return {stage: round(1000 * seconds / len(images), 2) for stage, seconds in spent.items()}


def _synchronized(device: torch.device) -> None:
    """Wait for a GPU's queued work, so that it is timed where it is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _localized(
    model: PointModel, path: Path, device: torch.device, spec: DataSpec, truth: np.ndarray
) -> dict[str, Any]:
    """`pixelreg predict`'s localizations of the movie at `path`, timed and scored."""
    source = open_frames(path, counts=True)
    started = time.perf_counter()
    table = list(Localizer(model, spec, device).rows(source))
    seconds = time.perf_counter() - started
    frames, size = source.count, source.width
    return _row(_points_per_frame(table, frames), truth, seconds, frames, size)


@contextmanager
def default_sigterm() -> Iterator[None]:
    """SIGTERM's default action while trackpy's worker processes live: they inherit handlers, and
    the pool ends them with SIGTERM, which the command line's handler would turn into a traceback."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _has_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _points_per_frame(table: list[dict[str, Any]], frames: int) -> np.ndarray:
    """Rows of a localization table as points (frames, M, 2), NaN-padded."""
    counts = np.bincount([row["index"] for row in table], minlength=frames)
    points = np.full((frames, max(1, int(counts.max(initial=0))), 2), np.nan)
    filled = np.zeros(frames, dtype=np.int64)
    for row in table:
        frame = row["index"]
        points[frame, filled[frame]] = row["x"], row["y"]
        filled[frame] += 1
    return points


def _row(found: np.ndarray, truth: np.ndarray, seconds: float, frames: int, size: int) -> dict[str, Any]:
    scores = summarize(
        found, truth, size, size, variable=True, tolerance=TOLERANCE_PX, pixel_size=PIXEL_SIZE_NM
    )
    return {
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 2),
        "mpx_per_second": round(frames * size * size / seconds / 1e6, 4),
        **{key: scores[key] for key in ("jaccard", "recall", "precision", "rmse_px", "efficiency")},
    }
