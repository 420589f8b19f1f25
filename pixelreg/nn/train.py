"""The training loop: epochs, validation, the best/last checkpoint policy, interruption, resume.

Every random choice is keyed by the seed, the epoch and the step (`data.random_stream`), so
a run that is interrupted and resumed ends with exactly the weights of one that never stopped.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pixelreg import __version__
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import AXIAL_TOLERANCE_NM, TOLERANCE_PX, match_points, pair_greedy
from pixelreg.evaluate.metrics import (
    CONFIDENCE_THRESHOLDS,
    best_threshold,
    keep_above,
    summarize,
    threshold_sweep,
)
from pixelreg.io.checkpoints import load_checkpoint, save_checkpoint
from pixelreg.io.datasets import load_dataset
from pixelreg.io.files import make_folders, remove_folders, write_json
from pixelreg.io.runs import RunDir, last_checkpoint_of, write_history
from pixelreg.limits import require_memory
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.config import TrainConfig, choose_model, require_counting
from pixelreg.nn.distributed import Distributed, distributed_loss, join_torchrun, stop_signals
from pixelreg.nn.inference import camera_of, can_count, detect_at_radii, images_to_tensor, resolve_device
from pixelreg.nn.readout import MERGE_RADII
from pixelreg.nn.registry import build_model, skeleton, training_bytes
from pixelreg.simulate.coords import position_mask
from pixelreg.simulate.dataset import render_split, require_dataset_memory
from pixelreg.simulate.positions import make_points
from pixelreg.simulate.render import render_with_truth
from pixelreg.simulate.spec import DataSpec
from pixelreg.simulate.streams import random_stream

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "resume", "train"]


class Reporter(Protocol):
    """What the training loop tells its caller; the CLI draws progress from it."""

    def start(self, run_dir: Path, model: str, first_epoch: int, epochs: int, batches: int) -> None: ...
    def batch(self) -> None: ...
    def epoch(self, row: dict[str, float], best: bool) -> None: ...


class SilentReporter:
    def start(self, run_dir: Path, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch(self) -> None:
        pass

    def epoch(self, row: dict[str, float], best: bool) -> None:
        pass


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM; `last_path` resumes it (epoch 0: nothing was kept)."""

    def __init__(self, last_path: Path, epoch: int) -> None:
        super().__init__(f"interrupted after epoch {epoch}")
        self.last_path, self.epoch = last_path, epoch


class Diverged(PixelregError):
    """The loss or the validation error stopped being a finite number."""

    def __init__(self, epoch: int, what: str) -> None:
        super().__init__(
            f"training diverged in epoch {epoch}: {what}; try a lower --lr "
            "(the checkpoints of the epochs before, if any, are kept)"
        )


@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    history: list[dict[str, float]]
    best_epoch: int  # the epoch best.pt holds
    best_val_mean_px: float
    already_finished: bool = False

    def to_json(self) -> dict[str, Any]:
        """What `train --json` prints."""
        return {
            "run_dir": str(self.run_dir),
            "best": str(self.best_path),
            "last": str(self.last_path),
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_mean_px": self.best_val_mean_px,
        }


@dataclass
class TrainingData:
    """Training and validation data; synthetic training images are rendered batch by batch.

    From a file, every image is stored. From a spec, only the points are kept (8 bytes a
    point) and each training batch is rendered when needed, with noise drawn from the
    stream of (seed, epoch, step): memory stays of the order of a batch however large `--n`
    is, noise is fresh every epoch, and a resumed run sees exactly the same batches.
    """

    size: tuple[int, int]
    train_points: np.ndarray  # (N_train, K, 2)
    val_images: np.ndarray  # (N_val, H, W) uint8
    val_points: np.ndarray  # (N_val, K, 2); 3D data (N_val, K, 3), each spot's depth (nm) after
    train_mask: np.ndarray  # (H, W) bool: positions seen in training
    spec: DataSpec | None
    train_images: np.ndarray | None = None  # stored images; None: render on the fly
    train_z: np.ndarray | None = None  # (N_train, K) nm: the stored images' depths, for 3D data

    @property
    def z_range(self) -> tuple[float, float] | None:
        """The depths a model learns to read (`DataSpec.depth_range`); None: 2D data."""
        return None if self.spec is None else self.spec.depth_range

    @property
    def variable_count(self) -> bool:
        """Whether the number of points varies per image (NaN rows pad the points)."""
        if self.spec is not None:
            return self.spec.variable_count
        return bool(np.isnan(self.train_points).any() or np.isnan(self.val_points).any())

    def batch(self, index: np.ndarray, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (B, H, W) of the training examples at `index`, and their points (B, K, 2), or
        for 3D data (B, K, 3) with each spot's depth."""
        points = self.train_points[index]
        if self.train_images is not None:
            z = None if self.train_z is None else self.train_z[index]
            images = self.train_images[index]
        else:
            assert self.spec is not None
            rng = random_stream(self.spec.seed, "noise", "train", epoch, step)
            images, photometry = render_with_truth(points, self.spec, rng)
            z = None if photometry is None else photometry.z
        return images, with_depth(points, z) if self.z_range is not None else points


def with_depth(points: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """(N, K, 3) the points (N, K, 2) with each spot's depth `z` (N, K) nm after: a 3D model's targets."""
    if z is None:
        raise PixelregError("3D training needs each spot's depth; this dataset holds none (make it again)")
    return np.concatenate([points, z[..., None].astype(points.dtype)], -1)


def load_training_data(config: TrainConfig) -> TrainingData:
    """The data a config names: its file, or its spec rendered on the fly."""
    if config.data is not None:
        dataset = load_dataset(config.data)
        train, val = dataset.select("train"), dataset.select("val")
        z = None if dataset.photometry is None else dataset.photometry.z
        depth = dataset.spec is not None and dataset.spec.depth_range is not None
        val_points = (
            with_depth(dataset.points[val], None if z is None else z[val]) if depth else dataset.points[val]
        )
        return TrainingData(
            dataset.size, dataset.points[train], dataset.images[val], val_points, dataset.train_mask(),
            dataset.spec, train_images=dataset.images[train], train_z=None if z is None else z[train],
        )  # fmt: skip
    spec = DataSpec.from_dict(config.spec, "the data options")
    require_dataset_memory(spec, ("val",))
    points, labels = make_points(spec)
    train, val = labels == "train", labels == "val"
    mask = position_mask(points[train], spec.height, spec.width)
    val_images, photometry = render_split(points[val], spec, "val")
    val_points = points[val]
    if spec.depth_range is not None:
        val_points = with_depth(val_points, None if photometry is None else photometry.z)
    return TrainingData(spec.size, points[train], val_images, val_points, mask, spec)


class CheckpointPolicy:
    """Owns best.pt and last.pt: which epoch is best, and when each file is written.

    The best epoch has the lowest validation error, then the lowest validation loss; a
    later epoch that ties replaces an earlier one. last.pt is written after every epoch.
    """

    def __init__(self, run: RunDir, best: dict[str, Any] | None = None, writes: bool = True) -> None:
        self.run, self.writes = run, writes
        self.best = best or {"epoch": 0, "val_mean_px": math.inf, "val_loss": math.inf}

    @property
    def best_epoch(self) -> int:
        return int(self.best["epoch"])

    def epoch_done(self, row: dict[str, float], payload: Callable[[], dict[str, Any]]) -> bool:
        """Record a finished epoch and write its checkpoints; whether it is the best so far."""
        key = (-row.get("val_jaccard", 0.0), row["val_mean_px"], row["val_loss"])
        best = (-self.best.get("val_jaccard", 0.0), self.best["val_mean_px"], self.best["val_loss"])
        is_best = key <= best
        if is_best:
            self.best = {"epoch": int(row["epoch"]), "val_mean_px": key[1], "val_loss": key[2]}
            if "val_jaccard" in row:  # a counting model: the highest Jaccard index wins first
                self.best["val_jaccard"] = row["val_jaccard"]
        if self.writes:
            state = payload()
            if is_best:
                self.run.forget_evaluation()  # it described the best.pt being replaced
                save_checkpoint(self.run.best, state)
            save_checkpoint(self.run.last, state)
        return is_best


def train_one_epoch(
    loss_of: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    config: TrainConfig,
    epoch: int,
    ranks: Distributed,
    device: torch.device,
    stopping: Callable[[], bool],
    reporter: Reporter,
) -> float:
    """One pass over the training split in the epoch's own order; the mean training loss.

    Raises TrainingInterrupted (with the previous epoch as the last finished) on a stop.
    """
    loss_of.train()
    n_train = len(data.train_points)
    order = random_stream(config.seed, "batch order", epoch=epoch).permutation(n_train)
    loss_sum = 0.0
    for step, start in enumerate(range(0, n_train, config.batch_size)):
        if ranks.any(stopping()):
            raise TrainingInterrupted(Path(), epoch - 1)
        index = order[start : start + config.batch_size]
        if len(index) < ranks.world:
            continue  # a last batch too small to give every process an image
        images, targets = data.batch(index, epoch, step)
        images, targets = images[ranks.rank :: ranks.world], targets[ranks.rank :: ranks.world]
        index = index[ranks.rank :: ranks.world]  # this process's shard of the batch
        x = images_to_tensor(images, device, camera_of(data.spec))
        y = torch.from_numpy(targets).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            loss = loss_of(x, y)
        value = loss.item()
        if ranks.any(not math.isfinite(value)):  # every rank stops together, before backward
            raise Diverged(epoch, f"the training loss became {value} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += value * len(index)
        reporter.batch()
    return ranks.sum(loss_sum) / n_train


@torch.no_grad()
def validate(model: PointModel, images: np.ndarray, points: np.ndarray, batch_size: int) -> dict[str, float]:
    """Over a held-out split: mean loss, and mean pixel error and share exact of matched points;
    for a counting model, the Jaccard index at the threshold that maximises it, that threshold,
    and the mean error of the pairs (the pairing tolerance while nothing pairs at all); for 3D
    data (points (N, K, 3), each spot's depth after), the paired spots' rmse of depth, nm."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, predictions = 0.0, []
    depth = points[..., 2] if points.shape[-1] == 3 else None  # 3D data: each spot's depth, nm
    points = points[..., :2]
    counting = can_count(model)
    for start in range(0, len(images), batch_size):
        x = images_to_tensor(images[start : start + batch_size], device, model.camera)
        y = torch.from_numpy(points[start : start + batch_size]).to(device)
        if depth is not None:
            y = torch.cat([y, torch.from_numpy(depth[start : start + batch_size, :, None]).to(device)], -1)
        total_loss += model.loss(x, y).item() * len(x)
        if not counting:
            predictions.append(model.predict(x).cpu().numpy())
    height, width = images.shape[1:]
    if counting:
        # the merge radius and threshold with the best Jaccard index; of equals, the surest radius
        best_jaccard = -1.0
        for candidate, detections in zip(
            MERGE_RADII, detect_at_radii(model, images, MERGE_RADII, device), strict=True
        ):
            sweep = threshold_sweep(detections[0][..., :2], detections[1], points, CONFIDENCE_THRESHOLDS)
            at = best_threshold(sweep)
            jaccard = sweep["jaccard"][sweep["threshold"].index(at)] or 0.0
            if jaccard > best_jaccard:
                best_jaccard, radius, threshold, (found, confidence) = jaccard, candidate, at, detections
        kept = keep_above(found, confidence, threshold)
        metrics = summarize(kept[..., :2], points, height, width, variable=True)
        row = {
            "val_loss": total_loss / len(images),
            "val_mean_px": metrics["mean_px"] if metrics["mean_px"] is not None else TOLERANCE_PX,
            "val_jaccard": metrics["jaccard"] or 0.0,
            "threshold": threshold,
            "merge_radius": radius,
        }
        if depth is not None:  # the paired spots' depth error, nm
            paired = pair_greedy(kept[..., :2], points, TOLERANCE_PX)
            rows, cols = np.nonzero(paired >= 0)
            error = kept[rows, paired[rows, cols], 2] - depth[rows, cols]
            row["val_rmse_z_nm"] = float(np.sqrt(np.mean(error**2))) if len(error) else AXIAL_TOLERANCE_NM
        return row
    metrics = summarize(match_points(np.concatenate(predictions), points), points, height, width)
    return {
        "val_loss": total_loss / len(images),
        "val_mean_px": metrics["mean_px"],
        "val_exact": metrics["exact"],
    }


def train(config: TrainConfig, run_dir: str | Path, reporter: Reporter | None = None) -> TrainResult:
    """Train a model as `config` says, writing the run into `run_dir`."""
    config.validate()
    return _fit(config, Path(run_dir), reporter or SilentReporter(), state=None)


def resume(last: str | Path, reporter: Reporter | None = None) -> TrainResult:
    """Continue the run of `last` (a last.pt, or its run directory) to its configured epochs."""
    path = last_checkpoint_of(last)
    state = load_checkpoint(path)
    if "config" not in state or "optimizer" not in state:
        raise PixelregError(f"{path} cannot be resumed: it holds no training state")
    for part in ("optimizer", "scheduler"):
        if not _numbers_only(state.get(part)):
            raise PixelregError(
                f"{path}: its {part} state holds something other than numbers; it cannot be resumed"
            )
    config = TrainConfig(**state["config"])
    config.validate()
    if config.model != state["model"]:
        raise PixelregError(
            f"{path}: its config names model {config.model!r}, its weights {state['model']!r}"
        )
    if config.data is not None and state.get("data_path"):
        config.data = state["data_path"]  # absolute: the same file from wherever resume is run
    return _fit(config, path.parent, reporter or SilentReporter(), state)


def _numbers_only(state: Any) -> bool:
    """Whether an optimizer's or schedule's state is made of numbers and tensors alone."""
    if isinstance(state, dict):
        return all(_numbers_only(value) for value in state.values())
    if isinstance(state, list | tuple):
        return all(_numbers_only(value) for value in state)
    if isinstance(state, float):
        return math.isfinite(state)
    return state is None or isinstance(state, int | bool | torch.Tensor)


@dataclass
class _Training:
    """What one run carries from its setup through every epoch: the loop's whole state."""

    config: TrainConfig
    run: RunDir
    data: TrainingData
    ranks: Distributed
    device: torch.device
    model: PointModel
    loss_of: nn.Module  # the model's loss, behind DistributedDataParallel with several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR
    policy: CheckpointPolicy
    common: dict[str, Any]  # what every checkpoint holds and no epoch changes
    history: list[dict[str, float]] = field(default_factory=list)
    first_epoch: int = 1
    resumed: bool = False
    kept: bool = False  # whether an epoch was saved whole, so that the run can be resumed

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        """What best.pt and last.pt hold after `epoch`: enough to predict with and to resume."""
        history = self.history
        return {
            **self.common,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "history": history,
            "best": self.policy.best,
            "threshold": history[-1].get("threshold") if history else None,
            "merge_radius": history[-1].get("merge_radius") if history else None,
        }

    def result(self, already_finished: bool = False) -> TrainResult:
        """The run as `train` and `resume` return it."""
        run, best = self.run, self.policy.best
        return TrainResult(run.root, run.best, run.last, self.history, self.policy.best_epoch,
                           best["val_mean_px"], already_finished)  # fmt: skip


def _fit(config: TrainConfig, run_dir: Path, reporter: Reporter, state: dict[str, Any] | None) -> TrainResult:
    """Set up model, optimizer and schedule (restored from `state` when resuming) and train."""
    device = resolve_device(config.device)
    if config.amp and device.type != "cuda":
        raise PixelregError("--amp needs a CUDA device; drop --amp or use --device cuda")
    ranks, device = join_torchrun(device)
    run = RunDir(ranks.from_main(str(run_dir)))  # every rank writes nowhere but takes rank 0's
    if ranks.world > 1 and config.batch_size < ranks.world:  # each process needs a share of a batch
        raise PixelregError(f"--batch-size {config.batch_size} is smaller than the {ranks.world} processes")
    config, data = _training_data(config)
    training = _setup(config, run, data, ranks, device)
    if state is not None:
        _restore(training, state)
        if training.first_epoch > config.epochs:
            return training.result(already_finished=True)
    if not ranks.main:
        reporter = SilentReporter()
    created = None
    if ranks.main and state is None:
        created = make_folders(run.root, f"cannot create run directory {run.root}")
    try:
        _run_epochs(training, reporter)
    except BaseException:
        if not training.kept:  # no epoch finished and saved whole: leave nothing behind
            remove_folders(created)
        raise
    return training.result()


def _training_data(config: TrainConfig) -> tuple[TrainConfig, TrainingData]:
    """The config's data, and the config naming the model that data calls for (`auto` resolved)."""
    data = load_training_data(config)
    variable = data.variable_count
    if variable:
        require_counting(config.model)
    config = replace(config, model=choose_model(config.model, data.spec, variable))
    if len(data.train_points) == 0 or len(data.val_points) == 0:
        raise PixelregError("training needs images in both the train and val splits; check the fractions")
    return config, data


def _setup(
    config: TrainConfig, run: RunDir, data: TrainingData, ranks: Distributed, device: torch.device
) -> _Training:
    """Epoch 1 of a new run: a seeded model, its loss, the optimizer, schedule and checkpoint policy."""
    torch.manual_seed(config.seed)  # weight initialisation: torch's own generator
    height, width = data.size
    model_args: dict[str, Any] = {"height": height, "width": width, "points": int(data.train_points.shape[1])}
    if data.variable_count:
        model_args["counting"] = True
        if data.z_range is not None:  # spots whose shape tells their depth: a 3D model
            model_args["z_range"] = list(data.z_range)
    model_args.update(config.model_args)
    need = training_bytes(skeleton(config.model, **model_args), config.batch_size)
    if device.type == "cpu":
        require_memory(
            need, f"training this {config.model} model", "lower --batch-size (or --channels, --depth)"
        )
    model = build_model(config.model, **model_args).to(device)
    model.camera = camera_of(data.spec)
    loss = distributed_loss(model, ranks)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    policy = CheckpointPolicy(run, writes=ranks.main)
    common = {
        "model": config.model,
        "model_args": model_args,
        "config": asdict(config),
        "data_spec": data.spec.to_dict() if data.spec else None,
        "data_path": str(Path(config.data).resolve()) if config.data else None,
        "train_mask": torch.from_numpy(data.train_mask),
        "pixelreg_version": __version__,
    }
    return _Training(config, run, data, ranks, device, model, loss, optimizer, scheduler, policy, common)


def _restore(training: _Training, state: dict[str, Any]) -> None:
    """Put back a checkpoint's weights, optimizer, schedule, history and best epoch, or say why not."""
    try:
        training.model.load_state_dict(state["state_dict"])
        training.optimizer.load_state_dict(state["optimizer"])
        training.scheduler.load_state_dict(state["scheduler"])
        training.history, training.policy.best = list(state["history"]), dict(state["best"])
        training.first_epoch = int(state["epoch"]) + 1
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PixelregError(
            f"{training.run.last}: its training state does not fit its model, so it cannot be resumed ({reason})"
        ) from None
    training.resumed = training.kept = True  # last.pt holds a whole epoch already


def _run_epochs(training: _Training, reporter: Reporter) -> None:
    """The loop: each remaining epoch trained, its schedule stepped, then validated and kept;
    a SIGINT/SIGTERM stops it at the next batch, or after the epoch it comes in."""
    config, ranks = training.config, training.ranks
    batches = math.ceil(len(training.data.train_points) / config.batch_size)
    reporter.start(training.run.root, config.model, training.first_epoch, config.epochs, batches)
    with stop_signals() as stop:
        stopping = lambda: stop["signal"] is not None  # noqa: E731
        for epoch in range(training.first_epoch, config.epochs + 1):
            started = time.perf_counter()
            lr = training.optimizer.param_groups[0]["lr"]
            try:
                train_loss = train_one_epoch(
                    training.loss_of, training.optimizer, training.data, config, epoch, ranks,
                    training.device, stopping, reporter,
                )  # fmt: skip
            except TrainingInterrupted as stopped:
                raise TrainingInterrupted(training.run.last, stopped.epoch) from None
            training.scheduler.step()
            _end_epoch(training, epoch, train_loss, lr, started, reporter)
            if ranks.any(stopping()) and epoch < config.epochs:
                raise TrainingInterrupted(training.run.last, epoch)


def _end_epoch(
    training: _Training, epoch: int, train_loss: float, lr: float, started: float, reporter: Reporter
) -> None:
    """One epoch's bookkeeping: validate it (stopping the run if anything is not finite), add its
    history row, write config.json (new runs), best.pt/last.pt as the policy says and history.csv."""
    config, run, data = training.config, training.run, training.data
    val = validate(training.model, data.val_images, data.val_points, max(256, config.batch_size))
    if not all(math.isfinite(value) for value in (train_loss, *val.values())):
        raise Diverged(epoch, f"validation gave {val}")
    row = {"epoch": epoch, "train_loss": train_loss, **val, "lr": lr}
    row["seconds"] = round(time.perf_counter() - started, 3)
    training.history.append(row)
    if training.ranks.main and epoch == 1 and not training.resumed:
        write_json(run.config, asdict(config))
    is_best = training.policy.epoch_done(row, functools.partial(training.checkpoint, epoch))
    if training.ranks.main:
        write_history(run.history, training.history)
    training.kept = True
    reporter.epoch(row, is_best)
