"""A trained model on arrays and files: device choice, batching, points out.

Nothing here trains; evaluation, benchmarks and `predict` run models through this module.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .camera import Camera
from .config import DEVICES
from .data import DataSpec
from .errors import PixelregError
from .limits import require_memory
from .metrics import keep_above
from .models import PointModel

PHOTON_SCALE = 250.0  # photons a model sees as 1: the brightest pixel of a 3,000-photon spot is about 1.5
INFERENCE_BATCH = 64
BATCH_PIXELS = 2**18  # larger images go fewer to a batch, so a batch's activations stay this size


def resolve_device(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    if name not in DEVICES:
        raise PixelregError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise PixelregError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not mps:
        raise PixelregError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def images_to_tensor(
    images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", camera: Camera | None = None
) -> torch.Tensor:
    """What a model sees, float32 (N, 1, H, W) on `device`: uint8 grey levels (N, H, W) over 255,
    or with a `camera`, ADU read back as photons, over PHOTON_SCALE."""
    tensor = torch.as_tensor(images).to(device, non_blocking=True).unsqueeze(1).float()
    if camera is None:
        return tensor.div_(255.0)
    return tensor.sub_(camera.baseline).mul_(camera.e_per_adu / camera.gain / camera.qe / PHOTON_SCALE)


def camera_of(spec: DataSpec | None) -> Camera | None:
    """The camera whose ADU a model trained on `spec` reads; None for grey levels."""
    return spec.camera if spec is not None and spec.camera_model else None


def batch_for(images: np.ndarray, batch_size: int) -> int:
    """Images per batch: fewer for larger images, so that a batch's activations stay BATCH_PIXELS."""
    if images.ndim == 3 and images.size:
        return max(1, min(batch_size, BATCH_PIXELS // (images.shape[1] * images.shape[2])))
    return batch_size


@torch.inference_mode()
def predict_images(
    model: PointModel,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = INFERENCE_BATCH,
) -> np.ndarray:
    """Points (N, K, 2) in pixels for uint8 images (N, H, W), in batches (a counting model's
    (N, M, 2), padded with NaN).

    64 images a batch keep a 50x50 model's activations in the CPU cache: on two cores up to
    twice as fast as 256 or 1024 at once, and never slower in our measurements.
    """
    model.eval()
    if can_count(model):  # any number per image: the detections kept at its threshold
        found, confidence = detect_images(model, images, device, batch_size)
        return keep_above(found, confidence, model.threshold).astype(np.float32)
    batch_size = batch_for(images, batch_size)
    out = [
        model.predict(images_to_tensor(images[start : start + batch_size], device, model.camera)).cpu()
        for start in range(0, len(images), batch_size)
    ]
    if not out:
        return np.zeros((0, model.points, 2), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


@torch.inference_mode()
def detect_images(
    model: PointModel,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = INFERENCE_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Every detection of a counting model in uint8 images (N, H, W), in batches: points
    (N, M, 2) padded with NaN and their confidence (N, M) in [0, 1], padded with 0."""
    return detect_at_radii(model, images, (model.merge_radius,), device, batch_size)[0]


@torch.inference_mode()
def detect_at_radii(
    model: PointModel,
    images: np.ndarray,
    radii: tuple[float, ...],
    device: torch.device | str = "cpu",
    batch_size: int = INFERENCE_BATCH,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`detect_images` at each merge radius, the network run once: one (points, confidence)
    per radius."""
    model.eval()
    batch_size = batch_for(images, batch_size)
    batches = [
        model.detect_at_radii(
            images_to_tensor(images[start : start + batch_size], device, model.camera), radii
        )
        for start in range(0, len(images), batch_size)
    ]
    return [_padded([batch[i] for batch in batches], len(images)) for i in range(len(radii))]


def _padded(found: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Batches of (points, confidence), each padded to its own most detections, as two arrays
    padded to the most detections of any image."""
    most = max((points.shape[1] for points, _ in found), default=1)
    points = np.full((n, most, 2), np.nan, dtype=np.float32)
    confidence = np.zeros((n, most), dtype=np.float32)
    start = 0
    for batch_points, batch_confidence in found:
        stop = start + len(batch_points)
        points[start:stop, : batch_points.shape[1]] = batch_points.cpu().numpy()
        confidence[start:stop, : batch_confidence.shape[1]] = batch_confidence.cpu().numpy()
        start = stop
    return points, confidence


def can_count(model: PointModel) -> bool:
    """Whether a model finds any number of points per image, each with a confidence."""
    return bool(getattr(model, "counting", False))


def inference_bytes(model: PointModel, height: int, width: int, batch: int = INFERENCE_BATCH) -> int:
    """Memory one batch of inference takes: the images and every convolution's output, float32."""
    batch = max(1, min(batch, BATCH_PIXELS // (height * width)))
    channels = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return 4 * batch * height * width * (2 + 2 * channels)


def check_image_size(model: PointModel, size: tuple[int, int], source: str) -> None:
    """Refuse images of a size a fixed-size model cannot take, naming where they came from."""
    if model.fixed_size and tuple(size) != (model.height, model.width):
        raise PixelregError(
            f"{source} is {size[0]}x{size[1]}, but this {model.name} model takes "
            f"{model.height}x{model.width} images only; use a heatmap model for other sizes"
        )


def locate_in_files(
    model: PointModel, paths: list[Path], device: torch.device | str = "cpu", spec: DataSpec | None = None
) -> list[dict[str, Any]]:
    """One row per found point: path, index of the image in its file, (point,) x, y(, confidence)
    (, photons, background, uncertainty).

    The `point` column appears only for models that find a fixed number of several points per
    image; `confidence` only for counting models, whose detections below `model.threshold` go;
    the photometry only for models of the camera model (`spec`, the training data's), whose
    images are 16-bit counts.
    """
    from .imageio import read_images

    counting = can_count(model)
    rows: list[dict[str, Any]] = []
    for path in paths:
        images = read_images(path, counts=model.camera is not None)
        check_image_size(model, images.shape[1:], str(path))
        height, width = images.shape[1:]
        require_memory(
            inference_bytes(model, height, width), f"locating spots in {height}x{width} images", "crop them"
        )
        if counting:
            found, confidence = detect_images(model, images, device)
            found = keep_above(found, confidence, model.threshold)
        else:
            found = predict_images(model, images, device)
            confidence = np.ones(found.shape[:2], dtype=np.float32)
        worth = None
        if model.camera is not None and spec is not None:
            from .worth import measured

            worth = measured(model.camera.photons(images), found, replace(spec, **asdict(model.camera)))
        for index, (points, scores) in enumerate(zip(found, confidence, strict=True)):
            for point, ((x, y), score) in enumerate(zip(points, scores, strict=True)):
                if not np.isfinite(x):
                    continue
                which = {"point": point} if model.points > 1 and not counting else {}
                row = {
                    "path": str(path),
                    "index": index,
                    **which,
                    "x": round(float(x), 4),
                    "y": round(float(y), 4),
                }
                if counting:
                    row["confidence"] = round(float(score), 4)
                if worth is not None:
                    row.update({key: round(float(worth[key][index, point]), 4) for key in PHOTOMETRY_COLUMNS})
                rows.append(row)
    return rows


PHOTOMETRY_COLUMNS = ("photons", "background", "uncertainty")


def table_columns(model: PointModel) -> list[str]:
    """The columns of `locate_in_files`'s rows for this model, also when it finds nothing."""
    if can_count(model):
        columns = ["path", "index", "x", "y", "confidence"]
    else:
        columns = ["path", "index", *(["point"] if model.points > 1 else []), "x", "y"]
    return columns + list(PHOTOMETRY_COLUMNS if model.camera is not None else ())
