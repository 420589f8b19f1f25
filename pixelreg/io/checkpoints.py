"""Safe, atomic, versioned checkpoints: plain dicts of tensors and JSON-able values.

A checkpoint is a pickle, and unpickling untrusted data can run code, so loading always
uses `torch.load(..., weights_only=True)`, which refuses anything but tensors and plain
containers.
"""

from __future__ import annotations

import math
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from pixelreg.errors import PixelregError
from pixelreg.fit.deblend import spot_shape
from pixelreg.io.files import require_file, write_atomic
from pixelreg.io.runs import HISTORY_FIELDS, resolve_checkpoint
from pixelreg.io.schema import check_value, describe, fields_from
from pixelreg.limits import require_memory
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.config import TrainConfig
from pixelreg.nn.registry import MODELS, build_model, skeleton
from pixelreg.simulate.spec import DataSpec

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_args", "state_dict")
MOST_MERGE_RADIUS = 3.0  # px: a merge radius beyond this would join separate spots
SAFE_MODULES = ("torch", "collections")  # where the classes of a checkpoint of tensors come from


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
    """Load and check a checkpoint safely; any problem is one clear PixelregError."""
    path = require_file(resolve_checkpoint(path), "checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes make torch raise almost any type
        if _names_foreign_objects(path):
            raise PixelregError(
                f"{path} holds objects other than tensors and plain values, so it was not loaded "
                "(loading it could run code); use a checkpoint written by pixelreg"
            ) from exc
        raise PixelregError(f"{path} is not a readable checkpoint (truncated or corrupt?)") from exc
    return check_payload(payload, path)


def check_payload(payload: Any, path: Path) -> dict[str, Any]:
    """Every field of a loaded checkpoint checked by type and range, naming the file and field."""
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise PixelregError(f"{path} is not a pixelreg checkpoint (missing model or weights)")
    version = payload["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise PixelregError(
            f"{path} has checkpoint format {describe(version)}; this pixelreg reads format "
            f"{FORMAT_VERSION} and older; upgrade pixelreg"
        )
    if not isinstance(payload["model"], str) or payload["model"] not in MODELS:
        raise PixelregError(f"{path} holds an unknown model {describe(payload['model'])}")
    args = payload["model_args"]
    if not isinstance(args, dict):
        raise PixelregError(f"{path}: model_args must be an object, got {describe(args)}")
    for key, value in args.items():
        numbers = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, bool):
            continue  # a switch, such as `counting`
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 2**20 for v in numbers):
            raise PixelregError(
                f"{path}: model_args field {key!r} must be a positive integer, got {describe(value)}"
            )
    weights = payload["state_dict"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise PixelregError(f"{path}: state_dict must map names to tensors, got {describe(weights)}")
    if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise PixelregError(
            f"{path}: the weights hold NaN or infinity (training diverged); retrain with a lower --lr"
        )
    if "epoch" in payload:
        epoch = check_value(payload["epoch"], "int", f"{path}: field 'epoch'")
        if epoch < 0:
            raise PixelregError(f"{path}: field 'epoch' must be 0 or more, got {epoch}")
    mask = payload.get("train_mask")
    if mask is not None and not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
        raise PixelregError(f"{path}: train_mask must be a 2-D tensor, got {describe(mask)}")
    if payload.get("data_spec") is not None:
        DataSpec.from_dict(payload["data_spec"], f"{path}: data_spec")
    check_value(payload.get("data_path"), "str | None", f"{path}: field 'data_path'")
    if "config" in payload:
        fields_from(TrainConfig, payload["config"], f"{path}: config")
    history = payload.get("history", [])
    for row in history if isinstance(history, list) else [history]:
        if not isinstance(row, dict) or not all(
            key in HISTORY_FIELDS and _finite(v) for key, v in row.items()
        ):
            raise PixelregError(f"{path}: history must be rows of finite numbers, got {describe(row)}")
    threshold = check_value(payload.get("threshold"), "float | None", f"{path}: field 'threshold'")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise PixelregError(f"{path}: field 'threshold' must be in [0, 1], got {threshold}")
    radius = check_value(payload.get("merge_radius"), "float | None", f"{path}: field 'merge_radius'")
    if radius is not None and not 0.0 < radius <= MOST_MERGE_RADIUS:
        raise PixelregError(f"{path}: field 'merge_radius' must be in (0, {MOST_MERGE_RADIUS}], got {radius}")
    best = payload.get("best", {"epoch": 0, "val_mean_px": 0.0, "val_loss": 0.0})
    if not isinstance(best, dict) or sorted(set(best) - {"val_jaccard"}) != [
        "epoch",
        "val_loss",
        "val_mean_px",
    ]:
        raise PixelregError(f"{path}: best must hold epoch, val_mean_px and val_loss, got {describe(best)}")
    if not (isinstance(best["epoch"], int) and all(_finite(best[key]) for key in set(best) - {"epoch"})):
        raise PixelregError(f"{path}: best must be an epoch and two finite numbers, got {describe(best)}")
    return payload


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _names_foreign_objects(path: Path) -> bool:
    """Whether `path` is an intact torch archive whose pickle names classes or functions
    from outside torch: read opcode by opcode, never run.

    `weights_only` loading refuses damaged files and files that would build such objects
    alike; this tells the two apart by the bytes, not by the wording of torch's message.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(names) != 1:
                return False
            data = archive.read(names[0])
        strings: list[str] = []
        modules: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                modules.append(str(arg).split(" ")[0])
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                modules.append(strings[-2])
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - bytes that do not parse are damaged, whatever the error
        return False
    return any(module.split(".")[0] not in SAFE_MODULES for module in modules)


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
