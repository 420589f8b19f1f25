"""The training loop: epochs, validation, the best/last checkpoint policy, interruption, resume.

Every random choice is keyed by the seed, the epoch and the step (`data.random_stream`), so
a run that is interrupted and resumed ends with exactly the weights of one that never stopped.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pixelreg import __version__
from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import TOLERANCE_PX, match_points
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
from pixelreg.nn.inference import camera_of, can_count, detect_at_radii, images_to_tensor, resolve_device
from pixelreg.nn.readout import MERGE_RADII
from pixelreg.nn.registry import build_model, skeleton, training_bytes
from pixelreg.simulate.coords import position_mask
from pixelreg.simulate.dataset import render_split, require_dataset_memory
from pixelreg.simulate.positions import make_points
from pixelreg.simulate.render import render
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


class TrainingInterrupted(Exception):
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
    val_points: np.ndarray  # (N_val, K, 2)
    train_mask: np.ndarray  # (H, W) bool: positions seen in training
    spec: DataSpec | None
    train_images: np.ndarray | None = None  # stored images; None: render on the fly

    @property
    def variable_count(self) -> bool:
        """Whether the number of points varies per image (NaN rows pad the points)."""
        if self.spec is not None:
            return self.spec.variable_count
        return bool(np.isnan(self.train_points).any() or np.isnan(self.val_points).any())

    def batch(self, index: np.ndarray, epoch: int, step: int) -> np.ndarray:
        """uint8 images (B, H, W) of the training examples at `index`."""
        if self.train_images is not None:
            return self.train_images[index]
        assert self.spec is not None
        rng = random_stream(self.spec.seed, "noise", "train", epoch, step)
        return render(self.train_points[index], self.spec, rng)


def load_training_data(config: TrainConfig) -> TrainingData:
    """The data a config names: its file, or its spec rendered on the fly."""
    if config.data is not None:
        dataset = load_dataset(config.data)
        train, val = dataset.select("train"), dataset.select("val")
        return TrainingData(
            dataset.size, dataset.points[train], dataset.images[val], dataset.points[val],
            dataset.train_mask(), dataset.spec, train_images=dataset.images[train],
        )  # fmt: skip
    spec = DataSpec.from_dict(config.spec, "the data options")
    require_dataset_memory(spec, ("val",))
    points, labels = make_points(spec)
    train, val = labels == "train", labels == "val"
    mask = position_mask(points[train], spec.height, spec.width)
    return TrainingData(
        spec.size, points[train], render_split(points[val], spec, "val")[0], points[val], mask, spec
    )


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
    train_points = torch.from_numpy(data.train_points)
    loss_sum = 0.0
    for step, start in enumerate(range(0, n_train, config.batch_size)):
        if ranks.any(stopping()):
            raise TrainingInterrupted(Path(), epoch - 1)
        index = order[start : start + config.batch_size]
        if len(index) < ranks.world:
            continue  # a last batch too small to give every process an image
        images = data.batch(index, epoch, step)[ranks.rank :: ranks.world]
        index = index[ranks.rank :: ranks.world]  # this process's shard of the batch
        x = images_to_tensor(images, device, camera_of(data.spec))
        y = train_points[index].to(device, non_blocking=True)
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
    and the mean error of the pairs (the pairing tolerance while nothing pairs at all)."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, predictions = 0.0, []
    counting = can_count(model)
    for start in range(0, len(images), batch_size):
        x = images_to_tensor(images[start : start + batch_size], device, model.camera)
        y = torch.from_numpy(points[start : start + batch_size]).to(device)
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
            sweep = threshold_sweep(*detections, points, CONFIDENCE_THRESHOLDS)
            at = best_threshold(sweep)
            jaccard = sweep["jaccard"][sweep["threshold"].index(at)] or 0.0
            if jaccard > best_jaccard:
                best_jaccard, radius, threshold, (found, confidence) = jaccard, candidate, at, detections
        metrics = summarize(keep_above(found, confidence, threshold), points, height, width, variable=True)
        return {
            "val_loss": total_loss / len(images),
            "val_mean_px": metrics["mean_px"] if metrics["mean_px"] is not None else TOLERANCE_PX,
            "val_jaccard": metrics["jaccard"] or 0.0,
            "threshold": threshold,
            "merge_radius": radius,
        }
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


def _fit(config: TrainConfig, run_dir: Path, reporter: Reporter, state: dict[str, Any] | None) -> TrainResult:
    """Set up model, optimizer and schedule (restored from `state` when resuming) and train."""
    device = resolve_device(config.device)
    if config.amp and device.type != "cuda":
        raise PixelregError("--amp needs a CUDA device; drop --amp or use --device cuda")
    ranks, device = join_torchrun(device)
    if ranks.world > 1:  # every rank writes nowhere but takes rank 0's run directory
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
        if config.batch_size < ranks.world:
            raise PixelregError(
                f"--batch-size {config.batch_size} is smaller than the {ranks.world} processes"
            )
    run = RunDir(run_dir)
    data = load_training_data(config)
    variable = data.variable_count
    if variable:
        require_counting(config.model)
    config = replace(config, model=choose_model(config.model, data.spec, variable))
    if len(data.train_points) == 0 or len(data.val_points) == 0:
        raise PixelregError("training needs images in both the train and val splits; check the fractions")

    torch.manual_seed(config.seed)  # weight initialisation: torch's own generator
    height, width = data.size
    model_args = {"height": height, "width": width, "points": int(data.train_points.shape[1])}
    if variable:
        model_args["counting"] = True
    model_args.update(config.model_args)
    need = training_bytes(skeleton(config.model, **model_args), config.batch_size)
    if device.type == "cpu":
        require_memory(
            need, f"training this {config.model} model", "lower --batch-size (or --channels, --depth)"
        )
    model = build_model(config.model, **model_args).to(device)
    model.camera = camera_of(data.spec)
    loss_of: nn.Module = LossOf(model)
    if ranks.world > 1:
        loss_of = nn.parallel.DistributedDataParallel(loss_of)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history: list[dict[str, float]] = []
    policy = CheckpointPolicy(run, writes=ranks.main)
    first_epoch = 1
    if state is not None:
        try:
            model.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, policy.best = list(state["history"]), dict(state["best"])
            first_epoch = int(state["epoch"]) + 1
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PixelregError(
                f"{run.last}: its training state does not fit its model, so it cannot be resumed ({reason})"
            ) from None
        if first_epoch > config.epochs:
            return TrainResult(
                run.root, run.best, run.last, history, policy.best_epoch, policy.best["val_mean_px"], True
            )

    common = {
        "model": config.model,
        "model_args": model_args,
        "config": asdict(config),
        "data_spec": data.spec.to_dict() if data.spec else None,
        "data_path": str(Path(config.data).resolve()) if config.data else None,
        "train_mask": torch.from_numpy(data.train_mask),
        "pixelreg_version": __version__,
    }

    def checkpoint(epoch: int) -> dict[str, Any]:
        return {
            **common,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "history": history,
            "best": policy.best,
            "threshold": history[-1].get("threshold") if history else None,
            "merge_radius": history[-1].get("merge_radius") if history else None,
        }

    if not ranks.main:
        reporter = SilentReporter()
    created = (
        make_folders(run.root, f"cannot create run directory {run.root}")
        if ranks.main and state is None
        else None
    )
    kept = state is not None
    try:
        batches = math.ceil(len(data.train_points) / config.batch_size)
        reporter.start(run.root, config.model, first_epoch, config.epochs, batches)
        with stop_signals() as stop:
            stopping = lambda: stop["signal"] is not None  # noqa: E731
            for epoch in range(first_epoch, config.epochs + 1):
                started = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                try:
                    train_loss = train_one_epoch(
                        loss_of, optimizer, data, config, epoch, ranks, device, stopping, reporter
                    )
                except TrainingInterrupted as stopped:
                    raise TrainingInterrupted(run.last, stopped.epoch) from None
                scheduler.step()
                val = validate(model, data.val_images, data.val_points, max(256, config.batch_size))
                if not all(math.isfinite(value) for value in (train_loss, *val.values())):
                    raise Diverged(epoch, f"validation gave {val}")
                row = {"epoch": epoch, "train_loss": train_loss, **val, "lr": lr}
                row["seconds"] = round(time.perf_counter() - started, 3)
                history.append(row)
                if ranks.main and epoch == 1 and state is None:
                    write_json(run.config, asdict(config))
                is_best = policy.epoch_done(row, lambda epoch=epoch: checkpoint(epoch))
                if ranks.main:
                    write_history(run.history, history)
                kept = True  # from here on the run can be resumed
                reporter.epoch(row, is_best)
                if ranks.any(stopping()) and epoch < config.epochs:
                    raise TrainingInterrupted(run.last, epoch)
    except BaseException:
        if not kept:  # no epoch finished and saved whole: leave nothing behind
            remove_folders(created)
        raise
    return TrainResult(run.root, run.best, run.last, history, policy.best_epoch, policy.best["val_mean_px"])


@contextmanager
def stop_signals() -> Iterator[dict[str, int | None]]:
    """Turn the first SIGINT/SIGTERM into a flag the loop checks; a second one stops at once."""
    flag: dict[str, int | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: Any) -> None:
        if flag["signal"] is not None:
            raise KeyboardInterrupt
        flag["signal"] = signum

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Distributed:
    """This process's place in a `torchrun` job; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0) > 0


def join_torchrun(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def leave_torchrun(wait: bool = True) -> None:
    """Close the process group, if this process joined one; `wait` for the other ranks first."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()  # let every rank finish before the group goes (gloo aborts otherwise)
        dist.destroy_process_group()


class LossOf(nn.Module):
    """Puts a model's loss behind `forward`, which DistributedDataParallel hooks into."""

    def __init__(self, model: PointModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.model.loss(images, points)
