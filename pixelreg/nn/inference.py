"""A trained model on arrays and files: device choice, batching, points out.

Nothing here trains; evaluation, benchmarks and `predict` run models through this module.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, replace

import numpy as np
import torch

from pixelreg.errors import PixelregError
from pixelreg.evaluate.metrics import keep_above
from pixelreg.fit.background import background_map
from pixelreg.fit.deblend import refine_detections
from pixelreg.io.frames import Frames
from pixelreg.limits import require_memory
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.config import check_device, check_precision
from pixelreg.nn.offsets import OffsetLocalizer
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.spec import DataSpec

PHOTON_SCALE = 250.0  # photons a model sees as 1: the brightest pixel of a 3,000-photon spot is about 1.5
INFERENCE_BATCH = 64
BATCH_PIXELS = 2**18  # larger images go fewer to a batch, so a batch's activations stay this size


def resolve_device(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    check_device(name)
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise PixelregError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not mps:
        raise PixelregError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def bfloat16_native(device: torch.device | str) -> bool:
    """Whether `device` runs bfloat16 convolutions natively (a CPU with AVX512-BF16 or AMX, a
    CUDA GPU from Ampere on): there they take a third of float32's time; elsewhere they are
    emulated, and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def set_precision(model: PointModel, precision: str, device: torch.device | str) -> str:
    """Run an offsets model's convolutions in `precision` (auto: bfloat16 where native, else
    float32); the name of the one chosen. Its maps and everything read from them stay float32:
    the positions move by thousandths of a pixel (`bench movie` measures it)."""
    check_precision(precision)
    if not hasattr(model, "bf16"):
        if precision == "bfloat16":
            raise PixelregError(
                f"--precision bfloat16 applies to the offsets model; this is a {model.name} model"
            )
        return "float32"
    if precision == "bfloat16" and not bfloat16_native(device):
        raise PixelregError(
            f"--precision bfloat16: this {torch.device(device).type} has no native bfloat16 "
            "(it would be emulated, and slower); use auto or float32"
        )
    model.bf16 = precision == "bfloat16" or (precision == "auto" and bfloat16_native(device))
    return "bfloat16" if model.bf16 else "float32"


def images_to_tensor(
    images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", camera: Camera | None = None
) -> torch.Tensor:
    """What a model sees, float32 (N, 1, H, W) on `device`: uint8 grey levels (N, H, W) over 255,
    or with a `camera`, ADU read back as photons, over PHOTON_SCALE."""
    tensor = torch.as_tensor(images).to(device, non_blocking=True).unsqueeze(1).float()
    if camera is None:  # a new tensor: float32 images given are shared, not to be changed
        return tensor / 255.0
    return (tensor - camera.baseline).mul_(camera.e_per_adu / camera.gain / camera.qe / PHOTON_SCALE)


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
        return counted_points(model, images, device, batch_size=batch_size)[0]
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


def counted_points(
    model: PointModel,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    threshold: float | None = None,
    batch_size: int = INFERENCE_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """What a counting model reports: its detections at `threshold` (None: the model's own),
    refined by joint fits where the model knows its spots (`model.spot`): points (N, M, 2)
    padded with NaN, confidence (N, M) padded with 0."""
    found, confidence = detect_images(model, images, device, batch_size)
    return kept_detections(model, images, found, confidence, threshold)


def kept_detections(
    model: PointModel,
    images: np.ndarray,
    found: np.ndarray,
    confidence: np.ndarray,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`counted_points` from the detections `found` with their `confidence` (`detect_images`)."""
    kept = keep_above(found, confidence, model.threshold if threshold is None else threshold)
    confidence = np.where(np.isfinite(kept[..., 0]), confidence, 0.0).astype(np.float32)
    if model.spot is None:
        return kept.astype(np.float32), confidence
    return refine_detections(images, kept, confidence, model.spot)


@torch.inference_mode()
def detect_at_radii(
    model: PointModel,
    images: np.ndarray,
    radii: tuple[float, ...],
    device: torch.device | str = "cpu",
    batch_size: int = INFERENCE_BATCH,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`detect_images` at each merge radius, the network run once: one (points, confidence)
    per radius (a 3D model's points (N, M, 4): x, y, depth and its expected error in nm).

    Frames of any size: the network and the readout run on windows of up to NETWORK_TILE
    pixels a side, each with a margin of context around the part it owns; a spot belongs to
    the window whose own part holds its pixel, so a spot on a border is found once, where the
    whole frame would have found it. Every window of a frame sees the frame's background level
    (`background_map`: of a large frame, a map that follows an uneven illumination or sky).
    """
    if not isinstance(model, OffsetLocalizer):
        raise TypeError(f"the {model.name} model does not detect; a counting model does")
    model.eval()
    n, height, width = images.shape
    # a window's spots take votes from its margin, whose pixels the network must see around them;
    # a network reading s x s cells must meet them where the whole frame's lie: windows start at
    # multiples of s
    cell = getattr(model, "stride", 1)
    margin = -(-(network_reach(model) + READOUT_MARGIN + 1) // cell) * cell
    network_tiles = [tiles(length, NETWORK_TILE, margin, cell) for length in (height, width)]
    window = max(stop - start for start, stop, _, _ in network_tiles[0]) * max(
        stop - start for start, stop, _, _ in network_tiles[1]
    )
    batch_size = max(1, min(batch_size, BATCH_PIXELS // window))
    batches = []
    for start in range(0, n, batch_size):
        frames = images_to_tensor(images[start : start + batch_size], device, model.camera)
        level = background_map(frames)  # the background, as training takes it: one level or a map
        if len(network_tiles[0]) == len(network_tiles[1]) == 1:
            batches.append(model.detect_at_radii(frames, radii, level))  # one window: as it always was
            continue
        parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in radii]
        for y0, y1, own_y0, own_y1 in network_tiles[0]:
            for x0, x1, own_x0, own_x1 in network_tiles[1]:
                tile_level = level[..., y0:y1, x0:x1] if level.dim() == 4 else level
                found = model.detect_at_radii(frames[..., y0:y1, x0:x1], radii, tile_level)
                # in frame coordinates: this window's own part, and whether it meets the frame's edges
                owned = frames.new_tensor(
                    [own_y0, own_y1, y0 == 0, y1 == height, own_x0, own_x1, x0 == 0, x1 == width]
                )
                for i, (points, confidence) in enumerate(found):
                    placed = points.clone()
                    placed[..., :2] += points.new_tensor([x0, y0])
                    parts[i].append((placed, torch.where(_owns(placed, owned), confidence, 0.0)))
        batches.append([_joined(found) for found in parts])
    return [_padded([batch[i] for batch in batches], len(images)) for i in range(len(radii))]


NETWORK_TILE = 1024  # px: larger frames are read in windows of this side
READOUT_MARGIN = 6  # px of context around a window's own part: a spot's votes and their reach


def tiles(length: int, tile: int, margin: int, step: int = 1) -> list[tuple[int, int, int, int]]:
    """Windows along an axis of `length` pixels: (start, stop, own start, own stop), the own
    parts of about `tile` pixels tiling the axis, each window `margin` pixels wider on either
    side where the axis goes on; the own parts start at multiples of `step`."""
    if length <= tile + 2 * margin:
        return [(0, length, 0, length)]
    count = math.ceil(length / tile)
    edges = [min(length, round(i * length / count / step) * step) for i in range(count)] + [length]
    return [(max(0, a - margin), min(length, b + margin), a, b) for a, b in itertools.pairwise(edges)]


def _owns(points: torch.Tensor, owned: torch.Tensor) -> torch.Tensor:
    """(..., M): whether each point (..., M, 2) lies in the own part of its window, `owned`
    (..., 8): y from, y to, y range at the frame's start, at its end, then the same for x; a
    range at the frame's edge also owns the points beyond it."""
    pixel = torch.floor(points + 0.5)
    mine = torch.isfinite(points[..., 0])
    for axis, (low, high, first, last) in ((1, owned[..., 0:4].unbind(-1)), (0, owned[..., 4:8].unbind(-1))):
        coordinate = pixel[..., axis]
        mine = mine & ((coordinate >= low) | (first > 0)) & ((coordinate < high) | (last > 0))
    return mine


def _joined(found: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The detections of every window of a frame batch as one (points, confidence), most
    confident first, NaN where there is none."""
    points = torch.cat([p for p, _ in found], 1)
    confidence = torch.cat([c for _, c in found], 1)
    most = max(1, int((confidence > 0).sum(1).max()))
    confidence, order = confidence.topk(most, dim=1)
    points = points.gather(1, order[..., None].expand(-1, -1, points.shape[-1]))
    return points.masked_fill((confidence <= 0)[..., None], math.nan), confidence


def _padded(found: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Batches of (points, confidence), each padded to its own most detections, as two arrays
    padded to the most detections of any image."""
    most = max((points.shape[1] for points, _ in found), default=1)
    values = found[0][0].shape[-1] if found else 2  # x, y (and a 3D model's depth, its error)
    points = np.full((n, most, values), np.nan, dtype=np.float32)
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


def photometry_spec(model: PointModel, spec: DataSpec | None) -> DataSpec | None:
    """What a camera model's photometry measures with: its training data's spec, with the model's
    own camera; None for a grey-level model, or without the spec."""
    return replace(spec, **asdict(model.camera)) if model.camera is not None and spec else None


def network_reach(model: PointModel) -> int:
    """How far, in pixels, the network looks from a pixel: one a 3x3 convolution, times its cells."""
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return convolutions * getattr(model, "stride", 1)


def check_frames(model: PointModel, frames: Frames) -> None:
    """Refuse, before any work, frames the model cannot take, smaller than what it must see
    around a spot to find it, or too large for the memory here."""
    check_image_size(model, (frames.height, frames.width), str(frames.path))
    window = tuple(min(side, NETWORK_TILE + 2 * 32) for side in (frames.height, frames.width))
    where = f"locating spots in {frames.height}x{frames.width} frames"
    require_memory(inference_bytes(model, *window) + 16 * frames.height * frames.width, where, "crop them")
    reach = network_reach(model)
    if can_count(model) and min(frames.height, frames.width) < reach + 1:
        raise PixelregError(
            f"{frames.path}: frames of {frames.height}x{frames.width} are smaller than this model's "
            f"field of view ({reach + 1}x{reach + 1} pixels around a spot)"
        )
