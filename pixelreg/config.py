"""The settings of a training run and the defaults of each model, without importing torch.

The command line reads its defaults and help from here, so it starts in a fraction of a
second; `models.py` builds the architectures these names stand for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .data import SEED_MAX
from .errors import PixelregError

# Adam's learning rate for each model; its keys are the model names, the default first.
DEFAULT_LR = {"heatmap": 1e-2, "cnn": 1e-3, "coordconv": 1e-3}
MODEL_NAMES = tuple(DEFAULT_LR)
DEFAULT_MODEL = MODEL_NAMES[0]
# The heatmap model's size: the options `train --channels` and `--depth` (heatmap only).
HEATMAP_ARGS = {"channels": 8, "depth": 2}
HEATMAP_MIN_DEPTH = 2  # one layer in, one layer out
HEATMAP_MAX = {"channels": 1024, "depth": 64}  # far beyond any use here, short of a hang
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as config.json and inside each checkpoint."""

    model: str = DEFAULT_MODEL  # architecture name, one of MODEL_NAMES
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
        """Raise PixelregError naming the first impossible setting."""
        if self.model not in MODEL_NAMES:
            raise PixelregError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if not 0 <= self.seed <= SEED_MAX:
            raise PixelregError(f"--seed must be 0 to {SEED_MAX}, got {self.seed}")
        if self.epochs < 1:
            raise PixelregError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PixelregError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise PixelregError(f"--lr must be a positive number, got {self.lr}")
        if self.device not in DEVICES:
            raise PixelregError(f"unknown device {self.device!r}; choose auto, cpu, cuda or mps")
        for name, value in self.model_args.items():
            if name in HEATMAP_ARGS:
                if self.model != "heatmap":
                    raise PixelregError(f"--{name} applies to the heatmap model only, not {self.model!r}")
                least = HEATMAP_MIN_DEPTH if name == "depth" else 1
                if (
                    not isinstance(value, int)
                    or isinstance(value, bool)
                    or not least <= value <= HEATMAP_MAX[name]
                ):
                    raise PixelregError(f"--{name} must be {least} to {HEATMAP_MAX[name]}, got {value!r}")

    @property
    def learning_rate(self) -> float:
        """The learning rate in effect: `lr`, or the model's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.model]
