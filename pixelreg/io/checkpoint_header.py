"""What a checkpoint says of its model, read without torch: `predict` checks its options and its
inputs against it in a fraction of a second, before it imports torch to load the weights.

A checkpoint (`torch.save`'s format) is a zip archive holding one pickle, `data.pkl`, of plain
values whose tensors point to storages kept beside it. Here the pickle is read by an unpickler
that builds nothing but plain containers: each tensor becomes a `TensorRef` (its shape), and a
class or function from outside torch and collections is refused, since unpickling it could run
code. The weights themselves are loaded by `io.checkpoints`, with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import collections
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file
from pixelreg.io.runs import HISTORY_FIELDS
from pixelreg.io.schema import check_value, describe, fields_from
from pixelreg.nn.config import MODEL_NAMES, TrainConfig, check_device, check_precision
from pixelreg.simulate.camera import Camera, check_camera_values
from pixelreg.simulate.spec import DataSpec

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_args", "state_dict")
MOST_MERGE_RADIUS = 3.0  # px: a merge radius beyond this would join separate spots
MOST_PICKLE_BYTES = 64 * 2**20  # a checkpoint's plain values are kilobytes; its tensors lie apart
OFFSETS_MODEL = "offsets"  # the one model with mirror images and bfloat16 convolutions


@dataclass(frozen=True)
class TensorRef:
    """A tensor of the checkpoint, left unread: its shape."""

    shape: tuple[int, ...]


class Opaque:
    """Any other torch object a checkpoint's pickle names (a dtype, a device): left unbuilt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class ForeignObject(Exception):
    """The pickle names a class or function from outside torch and collections."""


def _tensor_ref(storage: Any, offset: Any, size: Any, *args: Any) -> TensorRef:
    return TensorRef(tuple(int(n) for n in size))


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain containers and TensorRefs; refuses every other class."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _tensor_ref
        if module == "torch" or module.startswith("torch."):
            return Opaque
        raise ForeignObject(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None  # a storage: the tensors are not read here


def read_payload(path: str | Path) -> dict[str, Any]:
    """A checkpoint's pickled dict, its tensors as TensorRefs, with its plain fields checked."""
    path = require_file(path, "checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
            if len(names) != 1 or names[0].file_size > MOST_PICKLE_BYTES:
                raise ValueError("not one pickle of plain values")
            payload = _PlainUnpickler(archive.open(names[0])).load()
    except ForeignObject:
        raise PixelregError(
            f"{path} holds objects other than tensors and plain values, so it was not loaded "
            "(loading it could run code); use a checkpoint written by pixelreg"
        ) from None
    except Exception:  # noqa: BLE001 - damaged bytes make zipfile and pickle raise many types
        raise PixelregError(f"{path} is not a readable checkpoint (truncated or corrupt?)") from None
    return check_plain_fields(payload, path)


def check_plain_fields(payload: Any, path: Path) -> dict[str, Any]:
    """Every field of a checkpoint but its tensors, checked by type and range, naming the file
    and the field."""
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise PixelregError(f"{path} is not a pixelreg checkpoint (missing model or weights)")
    version = payload["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise PixelregError(
            f"{path} has checkpoint format {describe(version)}; this pixelreg reads format "
            f"{FORMAT_VERSION} and older; upgrade pixelreg"
        )
    if not isinstance(payload["model"], str) or payload["model"] not in MODEL_NAMES:
        raise PixelregError(f"{path} holds an unknown model {describe(payload['model'])}")
    args = payload["model_args"]
    if not isinstance(args, dict):
        raise PixelregError(f"{path}: model_args must be an object, got {describe(args)}")
    for key, value in args.items():
        numbers = value if isinstance(value, list | tuple) else [value]
        if isinstance(value, bool):
            continue  # a switch, such as `counting`
        if key == "z_range" and value is not None:  # a 3D model's depths, nm
            if not (isinstance(value, list) and len(value) == 2 and all(map(_finite, value))):
                raise PixelregError(
                    f"{path}: model_args field 'z_range' must be [LO, HI] nm, got {describe(value)}"
                )
            continue
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 2**20 for v in numbers):
            raise PixelregError(
                f"{path}: model_args field {key!r} must be a positive integer, got {describe(value)}"
            )
    if "epoch" in payload:
        epoch = check_value(payload["epoch"], "int", f"{path}: field 'epoch'")
        if epoch < 0:
            raise PixelregError(f"{path}: field 'epoch' must be 0 or more, got {epoch}")
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


def check_values(
    threshold: float | None = None,
    precision: str = "auto",
    camera: dict[str, float] | None = None,
    device: str = "auto",
) -> None:
    """Refuse reading settings that no model takes: an unknown device or precision, a threshold
    outside [0, 1], camera values out of range."""
    check_device(device)
    check_precision(precision)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise PixelregError(f"threshold must be in [0, 1], got {threshold:g}", ("threshold",))
    check_camera_values(**(camera or {}))


def data_kind(counts: bool) -> str:
    """The kind of images, in words: a camera's counts or grey levels."""
    return "a camera's 16-bit counts (ADU)" if counts else "8-bit grey levels"


def check_data_kind(model_counts: bool, data_counts: bool, source: str) -> None:
    """Refuse data of the other kind than the model's: a camera's ADU for a model trained on grey
    levels (it would see values far beyond any it learnt), or grey levels for a camera model."""
    if model_counts != data_counts:
        train = "--photons and a camera's settings" if data_counts else "grey levels (without --photons)"
        raise PixelregError(
            f"{source} holds {data_kind(data_counts)}, but this model reads {data_kind(model_counts)}; "
            f"use a model trained on {train}"
        )


@dataclass(frozen=True)
class ModelHeader:
    """What a checkpoint's model is, as far as reading images with it goes."""

    path: Path
    model: str
    points: int  # points per image of a fixed-count model
    counting: bool  # finds any number of points per image, each with a confidence
    spec: DataSpec | None  # the data it was trained on
    three_d: bool = False  # reads each spot's depth too

    @classmethod
    def read(cls, path: str | Path) -> ModelHeader:
        """The header of the checkpoint at `path`, checked."""
        payload = read_payload(path)
        args = payload["model_args"]
        spec = DataSpec.from_dict(payload["data_spec"]) if payload.get("data_spec") else None
        return cls(
            Path(path), payload["model"], int(args.get("points", 1)), bool(args.get("counting")), spec,
            args.get("z_range") is not None,
        )  # fmt: skip

    @property
    def camera(self) -> Camera | None:
        """The camera whose ADU the model reads as photons; None for a model of grey levels."""
        return self.spec.camera if self.spec is not None and self.spec.camera_model else None

    def check_settings(
        self,
        threshold: float | None = None,
        mirror: bool | None = None,
        precision: str = "auto",
        camera: dict[str, float] | None = None,
        device: str = "auto",
    ) -> None:
        """Refuse reading settings this model cannot take, naming the parameters: a threshold
        of a model that does not count, mirror images or bfloat16 of a model other than offsets,
        camera values of a model of grey levels, and values no model takes (`check_values`)."""
        check_values(threshold, precision, camera, device)
        if threshold is not None and not self.counting:
            raise PixelregError(
                f"threshold applies to a model that counts (trained with --points LO:HI); this "
                f"{self.model} model returns {self.points} point(s) per image",
                ("threshold",),
            )
        if mirror is not None and self.model != OFFSETS_MODEL:
            raise PixelregError(
                f"mirror/--no-mirror apply to the offsets model; this is a {self.model} model", ("mirror",)
            )
        if mirror and self.three_d:
            raise PixelregError(
                "a 3D model does not read mirror images (flipped, a spot's shape reads as another depth)",
                ("mirror",),
            )
        if precision == "bfloat16" and self.model != OFFSETS_MODEL:
            raise PixelregError(
                f"precision bfloat16 applies to the offsets model; this is a {self.model} model",
                ("precision",),
            )
        if camera:
            if self.camera is None:
                verb = "applies" if len(camera) == 1 else "apply"
                raise PixelregError(
                    f"{', '.join(camera)} {verb} to a model trained on camera images (--photons); "
                    "this one reads grey levels",
                    tuple(camera),
                )
