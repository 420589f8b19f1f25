"""Safe, atomic, versioned checkpoints: plain dicts of tensors and JSON-able values.

A checkpoint is a pickle, and unpickling untrusted data can run code, so loading always
uses `torch.load(..., weights_only=True)`, which refuses anything but tensors and plain
containers.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import PixelregError
from .files import require_file, write_atomic
from .models import MODELS, PointModel, build_model

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_args", "state_dict")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (with the format version added) to `path` atomically."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint file or a run directory (meaning its best.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise PixelregError(f"{path} is a directory without best.pt or last.pt; pass a checkpoint file")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint safely; any problem is one clear PixelregError."""
    path = require_file(resolve_checkpoint(path), "checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # no forbidden class or function: just bad bytes
            raise PixelregError(f"{path} is not a readable checkpoint (truncated or corrupt?)") from exc
        raise PixelregError(
            f"{path} holds objects other than tensors and plain values, so it was not loaded "
            "(loading it could run code); use a checkpoint written by pixelreg"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
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
