"""Safe, atomic, versioned checkpoints: plain dicts of tensors and JSON-able values.

A checkpoint is a pickle, and unpickling untrusted data can run code, so loading always
uses `torch.load(..., weights_only=True)`, which refuses anything but tensors and plain
containers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pixelreg.errors import PixelregError
from pixelreg.fit.deblend import spot_shape
from pixelreg.io.checkpoint_header import FORMAT_VERSION, check_plain_fields, read_payload
from pixelreg.io.files import require_file, write_atomic
from pixelreg.io.runs import resolve_checkpoint
from pixelreg.io.schema import describe
from pixelreg.limits import require_memory
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.registry import build_model, skeleton
from pixelreg.simulate.spec import DataSpec


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (with the format version added) to `path` atomically."""
    payload = {"format_version": FORMAT_VERSION, **payload}

    def write(tmp: Path) -> None:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch reports a full disk or a failed write this way
            raise PixelregError(f"cannot write {path}: {str(exc).splitlines()[0]}") from exc

    return write_atomic(path, write)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint safely; any problem is one clear PixelregError. Its plain
    fields are read and checked first, without building any object (`read_payload`)."""
    path = require_file(resolve_checkpoint(path), "checkpoint")
    read_payload(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes make torch raise almost any type
        raise PixelregError(f"{path} is not a readable checkpoint (truncated or corrupt?)") from exc
    return check_payload(payload, path)


def check_payload(payload: Any, path: Path) -> dict[str, Any]:
    """Every field of a loaded checkpoint checked by type and range, naming the file and field:
    its plain fields as `check_plain_fields` checks them, and its tensors."""
    check_plain_fields(payload, path)
    weights = payload["state_dict"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise PixelregError(f"{path}: state_dict must map names to tensors, got {describe(weights)}")
    if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise PixelregError(
            f"{path}: the weights hold NaN or infinity (training diverged); retrain with a lower --lr"
        )
    mask = payload.get("train_mask")
    if mask is not None and not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
        raise PixelregError(f"{path}: train_mask must be a 2-D tensor, got {describe(mask)}")
    return payload


def load_model(path: str | Path, device: Any = "cpu") -> tuple[PointModel, dict[str, Any]]:
    """The trained model a checkpoint file (or run directory) holds, on `device`, and its payload."""
    payload = load_checkpoint(path)
    if payload.get("epoch") == 0 and "optimizer" in payload:
        raise PixelregError(f"{path} holds an untrained model (its run never finished an epoch)")
    return model_from_checkpoint(payload, str(path)).to(device), payload


def model_from_checkpoint(payload: dict[str, Any], where: str = "the checkpoint") -> PointModel:
    """Rebuild the model a checkpoint describes and load its weights.

    The stored arguments and weight shapes are compared on the meta device first, so that a
    checkpoint cannot make this allocate a model it does not hold.
    """
    name = payload["model"]
    try:
        shape = skeleton(name, **payload["model_args"])
    except PixelregError as exc:
        raise PixelregError(f"{where}: {exc}") from None
    expected = {key: tuple(value.shape) for key, value in shape.state_dict().items()}
    stored = {key: tuple(value.shape) for key, value in payload["state_dict"].items()}
    if expected != stored:
        raise PixelregError(f"{where}: the weights do not fit a {name} model with its stored arguments")
    require_memory(
        8 * sum(p.numel() for p in shape.parameters()),
        f"the {name} model of {where}",
        "it cannot be loaded here",
    )
    model = build_model(name, **payload["model_args"])
    model.load_state_dict(payload["state_dict"])
    if payload.get("data_spec"):  # a model of the camera model reads ADU as photons
        spec = DataSpec.from_dict(payload["data_spec"], f"{where}: data_spec")
        model.camera = spec.camera if spec.camera_model else None
        model.spot = spot_shape(spec) if getattr(model, "counting", False) else None
    if payload.get("threshold") is not None:
        model.threshold = float(payload["threshold"])  # chosen on validation when training ended
    if payload.get("merge_radius") is not None:
        model.merge_radius = float(payload["merge_radius"])  # chosen with the threshold
    return model.eval()
