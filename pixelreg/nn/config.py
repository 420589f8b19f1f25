"""The settings of a training run and the defaults of each model, without importing torch.

The command line reads its defaults and help from here, so it starts in a fraction of a
second; `registry.py` builds the architectures these names stand for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pixelreg.errors import PixelregError
from pixelreg.simulate.spec import SEED_MAX, DataSpec

# Adam's learning rate for each model; its keys are the model names.
DEFAULT_LR = {"heatmap": 1e-2, "cnn": 1e-3, "coordconv": 1e-3, "offsets": 3e-3}
MODEL_NAMES = tuple(DEFAULT_LR)
# The default, `auto`, picks by the data: the heatmap for the clean task (one bright pixel at a
# pixel centre), where it is exact and trains in seconds; the offsets model for noise, blur or
# sub-pixel spots, where the heatmap locks onto pixel centres and the offsets model reaches the
# Cramér-Rao bound (`pixelreg bench precision`).
AUTO_MODEL = "auto"
DEFAULT_MODEL = AUTO_MODEL
# The models that find any number of points per image, each with a confidence (--points LO:HI).
COUNTING_MODELS = ("offsets",)
# The size of the fully convolutional models: the options `train --channels` and `--depth`.
STRIDES = (1, 2)  # the offsets model's cells: 1 pixel or 2 x 2 (larger cells lose precision)
MODEL_SIZES = {"heatmap": {"channels": 8, "depth": 2}, "offsets": {"channels": 32, "depth": 4}}
SIZE_LIMITS = {"channels": (1, 1024), "depth": (2, 64)}  # depth 2: one layer in, one out
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
        if self.model not in (AUTO_MODEL, *MODEL_NAMES):
            raise PixelregError(
                f"unknown model {self.model!r}; choose {AUTO_MODEL} or one of {', '.join(MODEL_NAMES)}"
            )
        if not 0 <= self.seed <= SEED_MAX:
            raise PixelregError(f"seed must be 0 to {SEED_MAX}, got {self.seed}", ("seed",))
        if self.epochs < 1:
            raise PixelregError(f"epochs must be at least 1, got {self.epochs}", ("epochs",))
        if self.batch_size < 1:
            raise PixelregError(f"batch_size must be at least 1, got {self.batch_size}", ("batch_size",))
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise PixelregError(f"lr must be a positive number, got {self.lr}", ("lr",))
        check_device(self.device)
        for name, value in self.model_args.items():
            if name in SIZE_LIMITS:
                if self.model not in (AUTO_MODEL, *MODEL_SIZES):
                    raise PixelregError(
                        f"{name} applies to the {' and '.join(MODEL_SIZES)} models only, not {self.model!r}",
                        (name,),
                    )
                least, most = SIZE_LIMITS[name]
                if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
                    raise PixelregError(f"{name} must be {least} to {most}, got {value!r}", (name,))
        for name in ("stride", "mirror"):
            if name in self.model_args and self.model not in (AUTO_MODEL, "offsets"):
                raise PixelregError(f"{name} applies to the offsets model only, not {self.model!r}", (name,))
        if "stride" in self.model_args:
            if self.model_args["stride"] not in STRIDES:
                choices = ", ".join(map(str, STRIDES))
                raise PixelregError(
                    f"stride must be one of {choices}, got {self.model_args['stride']!r}", ("stride",)
                )
        if self.spec.get("points_max") is not None:
            require_counting(self.model)

    @property
    def learning_rate(self) -> float:
        """The learning rate in effect: `lr`, or the model's default (once `auto` is resolved)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.model]


PRECISIONS = ("auto", "float32", "bfloat16")  # of an offsets model's convolutions, when it reads


def check_precision(name: str) -> None:
    """Refuse a precision other than PRECISIONS'."""
    if name not in PRECISIONS:
        raise PixelregError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}", ("precision",))


def check_device(name: str) -> None:
    """Refuse a device name other than DEVICES' (whether it is here is for torch to tell)."""
    if name not in DEVICES:
        raise PixelregError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")


def require_counting(model: str) -> None:
    """Refuse a model that cannot count for data whose number of points varies per image."""
    if model not in (AUTO_MODEL, *COUNTING_MODELS):
        raise PixelregError(
            f"the {model} model returns a fixed number of points and cannot count them; data with "
            f"a count that varies per image (points LO:HI) needs the {' or '.join(COUNTING_MODELS)} model "
            f"(or {AUTO_MODEL})"
        )


def choose_model(name: str, spec: DataSpec | None, variable: bool = False) -> str:
    """The model `auto` stands for on data made by `spec` (None: data of unknown making);
    `variable`: the data's count varies per image (a file without a spec may say so by NaN rows)."""
    if name != AUTO_MODEL:
        return name
    if variable or (spec is not None and spec.variable_count):
        return COUNTING_MODELS[0]
    clean = spec is not None and spec.blur == 0 and spec.noise == 0 and not spec.subpixel
    return "heatmap" if clean or spec is None else "offsets"
