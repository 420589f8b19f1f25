"""Safe, atomic, versioned checkpoints: plain dicts of tensors and JSON-able values.

A checkpoint is a pickle, and unpickling untrusted data can run code, so loading always
uses `torch.load(..., weights_only=True)`, which refuses anything but tensors and plain
containers.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import PixelregError
from .files import require_file, write_atomic
from .models import MODELS, PointModel, build_model
from .runs import resolve_checkpoint

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_args", "state_dict")
SAFE_MODULES = ("torch", "collections")  # where the classes of a checkpoint of tensors come from


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (with the format version added) to `path` atomically."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


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
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise PixelregError(f"{path} is not a pixelreg checkpoint (missing model or weights)")
    version = payload["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise PixelregError(
            f"{path} has checkpoint format {version!r}; this pixelreg reads format "
            f"{FORMAT_VERSION} and older; upgrade pixelreg"
        )
    if payload["model"] not in MODELS:
        raise PixelregError(f"{path} holds an unknown model {payload['model']!r}")
    return payload


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
    """The model a checkpoint file (or run directory) holds, on `device`, and its payload."""
    payload = load_checkpoint(path)
    return model_from_checkpoint(payload).to(device), payload


def model_from_checkpoint(payload: dict[str, Any]) -> PointModel:
    """Rebuild the model a checkpoint describes and load its weights."""
    model = build_model(payload["model"], **payload["model_args"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise PixelregError(
            f"the checkpoint's weights do not fit a {payload['model']} model with its stored arguments"
        ) from exc
    return model.eval()
