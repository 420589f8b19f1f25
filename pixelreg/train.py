"""The training loop: batches, validation, best/last checkpoints, interruption and resume.

Every random choice is a function of the seed and the epoch number, so a run that is
interrupted and resumed ends with exactly the weights of a run that never stopped.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .data import SPLITS, DataSpec, load_dataset, make_points, pixel_of, position_mask, render, render_many
from .errors import PixelregError
from .files import write_json, write_text
from .metrics import match_points
from .models import DEFAULT_MODEL, MODELS, PointModel, build_model

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_mean_px", "val_exact", "lr", "seconds")
DEFAULT_LR = {"heatmap": 1e-2, "cnn": 1e-3, "coordconv": 1e-3}


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as config.json and inside each checkpoint."""

    model: str = DEFAULT_MODEL  # architecture name, see pixelreg.models.MODELS
    epochs: int = 30  # passes over the training split
    batch_size: int = 64  # images per optimisation step
    lr: float | None = None  # Adam learning rate; None: the model's default (DEFAULT_LR)
    seed: int = 0  # weight init and batch order
    device: str = "auto"  # auto | cpu | cuda | mps
    data: str | None = None  # a dataset .npz; None: make one in memory from `spec`
    spec: dict[str, Any] = field(default_factory=dict)  # DataSpec fields when data is None
    model_args: dict[str, Any] = field(default_factory=dict)  # extra architecture arguments
    amp: bool = False  # bfloat16 autocast on CUDA

    def validate(self) -> None:
        if self.model not in MODELS:
            raise PixelregError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.epochs < 1:
            raise PixelregError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PixelregError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise PixelregError(f"--lr must be a positive number, got {self.lr}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.model, 1e-3)


class Reporter(Protocol):
    """What the training loop tells its caller; the CLI draws progress from it."""

    def start(self, run_dir: Path, first_epoch: int, epochs: int, batches: int) -> None: ...
    def batch(self) -> None: ...
    def epoch(self, row: dict[str, float], best: bool) -> None: ...


class SilentReporter:
    def start(self, run_dir: Path, first_epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch(self) -> None:
        pass

    def epoch(self, row: dict[str, float], best: bool) -> None:
        pass


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM; `last_path` resumes it."""

    def __init__(self, last_path: Path, epoch: int) -> None:
        super().__init__(f"interrupted after epoch {epoch}")
        self.last_path, self.epoch = last_path, epoch


@dataclass
class TrainResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    history: list[dict[str, float]]
    already_finished: bool = False


def resolve_device(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise PixelregError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
        return torch.device("cuda")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise PixelregError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise PixelregError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")


def next_run_dir(out: str | Path, name: str | None, exist_ok: bool = False) -> Path:
    """The run directory to use: `name`, or with no name the first free of train, train2, ..."""
    out = Path(out)
    if name is not None:
        run_dir = out / name
        if run_dir.exists() and not exist_ok:
            raise PixelregError(
                f"run directory {run_dir} already exists; choose another --name, pass "
                "--exist-ok to write into it, or --resume its last.pt"
            )
        return run_dir
    run_dir, number = out / "train", 1
    while run_dir.exists():
        number += 1
        run_dir = out / f"train{number}"
    return run_dir


@dataclass
class TrainingData:
    """Training and validation data; synthetic training images are rendered batch by batch.

    From a file, every image is stored. From a spec, only the points are kept (8 bytes a
    point) and each training batch is rendered when needed, with noise drawn from a stream
    keyed by (seed, epoch, step): memory stays of the order of a batch however large `--n`
    is, noise is fresh every epoch, and a resumed run sees exactly the same batches.
    """

    size: tuple[int, int]
    train_points: np.ndarray  # (N_train, K, 2)
    val_images: np.ndarray  # (N_val, H, W) uint8
    val_points: np.ndarray  # (N_val, K, 2)
    train_mask: np.ndarray  # (H, W) bool: positions seen in training
    spec: DataSpec | None
    train_images: np.ndarray | None = None  # stored images; None: render on the fly

    def batch(self, index: np.ndarray, epoch: int, step: int) -> np.ndarray:
        """uint8 images (B, H, W) of the training examples at `index`."""
        if self.train_images is not None:
            return self.train_images[index]
        assert self.spec is not None
        rng = np.random.default_rng([self.spec.seed, 100, epoch, step])
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
    spec = DataSpec(**config.spec)
    points, labels = make_points(spec)
    train, val = labels == "train", labels == "val"
    val_images = render_many(points[val], spec, np.random.default_rng([spec.seed, 1 + SPLITS.index("val")]))
    mask = position_mask(points[train], spec.height, spec.width)
    return TrainingData(spec.size, points[train], val_images, points[val], mask, spec)


def images_to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1] on `device`."""
    tensor = torch.as_tensor(images).to(device, non_blocking=True)
    return tensor.unsqueeze(1).float().div_(255.0)


@torch.inference_mode()
def predict_images(
    model: PointModel, images: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """Points (N, K, 2) in pixels for uint8 images (N, H, W), in batches.

    64 images a batch keep a 50x50 model's activations in the CPU cache: on two cores up to
    twice as fast as 256 or 1024 at once, and never slower in our measurements.
    """
    model.eval()
    out = [
        model.predict(images_to_tensor(images[start : start + batch_size], device)).cpu()
        for start in range(0, len(images), batch_size)
    ]
    if not out:
        return np.zeros((0, model.points, 2), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


@torch.no_grad()
def validate(
    model: PointModel, images: torch.Tensor, points: torch.Tensor, batch_size: int
) -> tuple[float, float, float]:
    """(mean loss, mean pixel error, share exact) of matched points over a held-out split."""
    model.eval()
    total_loss, errors, exact = 0.0, [], 0
    for start in range(0, len(images), batch_size):
        x = images_to_tensor(images[start : start + batch_size])
        x = x.to(next(model.parameters()).device)
        y = points[start : start + batch_size].to(x.device)
        total_loss += model.loss(x, y).item() * len(x)
        pred = model.predict(x).cpu().numpy()
        true = y.cpu().numpy()
        matched = match_points(pred, true)
        errors.append(np.linalg.norm(matched - true, axis=-1).mean(1))
        exact += int((pixel_of(matched) == pixel_of(true)).all(axis=(1, 2)).sum())
    return total_loss / len(images), float(np.concatenate(errors).mean()), exact / len(images)


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


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in HISTORY_FIELDS})
    write_text(path, buffer.getvalue())


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


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    resume: str | Path | None = None,
) -> TrainResult:
    """Train a model as `config` says, writing the run into `run_dir` (or resume a run)."""
    reporter = reporter or SilentReporter()
    state: dict[str, Any] | None = None
    if resume is not None:
        resume = Path(resume) / "last.pt" if Path(resume).is_dir() else Path(resume)
        if resume.name == "best.pt":
            raise PixelregError(
                f"{resume} is the best epoch, not the last; resume from {resume.with_name('last.pt')}"
            )
        state = load_checkpoint(resume)
        if "config" not in state or "optimizer" not in state:
            raise PixelregError(f"{resume} cannot be resumed: it holds no training state")
        config = TrainConfig(**state["config"])
        run_dir = Path(resume).parent
    elif run_dir is None:
        raise ValueError("train() needs run_dir or resume")
    run_dir = Path(run_dir)
    config.validate()
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
    data = load_training_data(config)
    height, width = data.size
    if len(data.train_points) == 0 or len(data.val_points) == 0:
        raise PixelregError("training needs images in both the train and val splits; check the fractions")

    torch.manual_seed(config.seed)
    model_args = {"height": height, "width": width, "points": int(data.train_points.shape[1])}
    model_args.update(config.model_args)
    model = build_model(config.model, **model_args).to(device)
    loss_of: nn.Module = LossOf(model)
    if ranks.world > 1:
        loss_of = nn.parallel.DistributedDataParallel(loss_of)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "val_mean_px": math.inf, "val_loss": math.inf}
    first_epoch = 1
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best = list(state["history"]), dict(state["best"])
        first_epoch = int(state["epoch"]) + 1
        if first_epoch > config.epochs:
            return TrainResult(run_dir, run_dir / "best.pt", run_dir / "last.pt", history, True)

    train_points = torch.from_numpy(data.train_points)
    val_images, val_points = torch.from_numpy(data.val_images), torch.from_numpy(data.val_points)
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
            "best": best,
        }

    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if ranks.main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PixelregError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from exc
        if state is None:
            write_json(run_dir / "config.json", asdict(config))
            save_checkpoint(last_path, checkpoint(0))
    else:
        reporter = SilentReporter()
    n_train = len(data.train_points)
    batches = math.ceil(n_train / config.batch_size)
    reporter.start(run_dir, first_epoch, config.epochs, batches)
    with stop_signals() as stop:
        for epoch in range(first_epoch, config.epochs + 1):
            started = time.perf_counter()
            model.train()
            order = torch.randperm(
                n_train, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            )
            loss_sum = 0.0
            for step, start in enumerate(range(0, n_train, config.batch_size)):
                if ranks.any(stop["signal"] is not None):
                    raise TrainingInterrupted(last_path, epoch - 1)
                index = order[start : start + config.batch_size]
                if len(index) < ranks.world:
                    continue  # a last batch too small to give every process an image
                images = data.batch(index.numpy(), epoch, step)[ranks.rank :: ranks.world]
                index = index[ranks.rank :: ranks.world]  # this process's shard of the batch
                x = images_to_tensor(images, device)
                y = train_points[index].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
                    loss = loss_of(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(index)
                reporter.batch()
            loss_sum = ranks.sum(loss_sum)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            val_loss, val_mean_px, val_exact = validate(
                model, val_images, val_points, max(256, config.batch_size)
            )
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / len(order),
                "val_loss": val_loss,
                "val_mean_px": val_mean_px,
                "val_exact": val_exact,
                "lr": lr,
                "seconds": round(time.perf_counter() - started, 3),
            }
            history.append(row)
            is_best = (val_mean_px, val_loss) <= (best["val_mean_px"], best["val_loss"])
            if is_best:
                best = {"epoch": epoch, "val_mean_px": val_mean_px, "val_loss": val_loss}
            if ranks.main:
                if is_best:
                    save_checkpoint(best_path, checkpoint(epoch))
                save_checkpoint(last_path, checkpoint(epoch))
                write_history(run_dir / "history.csv", history)
            reporter.epoch(row, is_best)
            if ranks.any(stop["signal"] is not None) and epoch < config.epochs:
                raise TrainingInterrupted(last_path, epoch)
    return TrainResult(run_dir, best_path, last_path, history)
