"""The model registry: build a model by name, check its arguments, measure its training memory."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from pixelreg.errors import PixelregError
from pixelreg.nn.architectures import CNNRegressor, CoordConvRegressor, HeatmapLocalizer, PointModel
from pixelreg.nn.config import DEFAULT_MODEL
from pixelreg.nn.offsets import OffsetLocalizer

MODELS: dict[str, type[PointModel]] = {
    cls.name: cls for cls in (HeatmapLocalizer, CNNRegressor, CoordConvRegressor, OffsetLocalizer)
}  # the same names, in the same order, as config.MODEL_NAMES (a test checks it)
__all__ = ["DEFAULT_MODEL", "MODELS", "PointModel", "build_model"]


def model_arguments(name: str) -> tuple[str, ...]:
    """The keyword arguments the named model's constructor takes."""
    return tuple(inspect.signature(MODELS[name].__init__).parameters)[1:]


def skeleton(name: str, **kwargs: Any) -> PointModel:
    """The named model on torch's meta device: shapes without memory, to check and measure.

    Raises PixelregError when the arguments do not build such a model.
    """
    if name not in MODELS:
        raise PixelregError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    unknown = sorted(set(kwargs) - set(model_arguments(name)))
    if unknown:
        raise PixelregError(f"the {name} model takes no argument(s) {', '.join(unknown)}")
    try:
        with torch.device("meta"):
            return MODELS[name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PixelregError(f"the arguments {kwargs} do not build a {name} model ({exc})") from None


def training_bytes(model: PointModel, batch_size: int) -> int:
    """Memory one training step takes: weights, their gradients and Adam's two moments, and
    the activations of a batch kept for the backward pass (with their gradients).

    Measured by a forward pass on the meta device, so nothing is allocated.
    """
    weights = sum(p.numel() for p in model.parameters())
    activations = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal activations
        if isinstance(output, Tensor):
            activations += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        model(torch.empty(batch_size, 1, model.height, model.width, device="meta"))
    except (RuntimeError, NotImplementedError):
        activations = batch_size * model.height * model.width * 64  # a generous guess
    finally:
        for hook in hooks:
            hook.remove()
    return 4 * (4 * weights + 2 * activations)


def build_model(name: str, **kwargs: Any) -> PointModel:
    """Build a registered model by name; unknown names raise a clear PixelregError."""
    if name not in MODELS:
        raise PixelregError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    # channels-last convolutions run several times faster on CPU for these thin layers
    return MODELS[name](**kwargs).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
