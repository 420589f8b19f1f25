"""Training under `torchrun`: this process's rank, the process group, and stop signals.

A single process is rank 0 of 1 and every collective is then a no-op, so the training loop
reads the same with one process or several (DistributedDataParallel).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pixelreg.nn.architectures import PointModel

__all__ = ["Distributed", "LossOf", "distributed_loss", "join_torchrun", "leave_torchrun", "stop_signals"]


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

    def from_main(self, value: str) -> str:
        """Rank 0's `value`, on every rank (a run directory that rank 0 chose, say)."""
        if self.world == 1:
            return value
        shared = [value]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]


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


def distributed_loss(model: PointModel, ranks: Distributed) -> nn.Module:
    """The module whose `forward` is the model's loss: with several processes, wrapped in
    DistributedDataParallel so that backward averages the gradients over the ranks."""
    module: nn.Module = LossOf(model)
    if ranks.world > 1:
        module = nn.parallel.DistributedDataParallel(module)
    return module
