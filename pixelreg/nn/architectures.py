"""Architectures that map images to points: the base class and the single-point models.

Every model takes float32 images (N, 1, H, W) in [0, 1] and offers:
- `loss(images, points)`: the training objective for true points (N, K, 2) in pixels;
- `predict(images)`: points (N, K, 2) in pixels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelreg.errors import PixelregError
from pixelreg.fit.deblend import SpotShape
from pixelreg.nn.config import MODEL_SIZES, SIZE_LIMITS
from pixelreg.simulate.camera import Camera
from pixelreg.simulate.coords import from_normalized, to_normalized


class PointModel(nn.Module):
    """Base class: a model that locates `points` bright points in an image."""

    fixed_size = True  # whether the model only takes the image size it was built for
    # set by the counting model alone (declared for the type checker; `hasattr` tells who has them)
    threshold: float  # the least confidence a detection needs to be kept
    merge_radius: float  # votes nearer than this make one spot
    mirror: bool  # whether each image is read with its three mirror images too
    bf16: bool  # whether the convolutions run in bfloat16

    def __init__(self, height: int, width: int, points: int = 1) -> None:
        super().__init__()
        self.height, self.width, self.points = height, width, points
        self.camera: Camera | None = None  # whose ADU the model reads as photons; None: grey levels
        # counting: the training data's fixed spot, by which detections are refined with joint
        # fits (deblend.py); None: the network's positions as they are
        self.spot: SpotShape | None = None

    def check_input(self, images: Tensor) -> None:
        """Refuse images the model cannot take, with a message that says why."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise PixelregError(f"expected images of shape (N, 1, H, W), got {tuple(images.shape)}")
        size = tuple(images.shape[-2:])
        if self.fixed_size and size != (self.height, self.width):
            raise PixelregError(
                f"this {self.name} model takes {self.height}x{self.width} images only, got "
                f"{size[0]}x{size[1]}; use the heatmap model for other sizes"
            )

    name = "base"

    def loss(self, images: Tensor, points: Tensor) -> Tensor:
        """The training objective for true points (N, K, 2) in pixels."""
        raise NotImplementedError

    def predict(self, images: Tensor) -> Tensor:
        """Points (N, K, 2) in pixels."""
        raise NotImplementedError


class CNNRegressor(PointModel):
    """The published baseline: three conv/ReLU/max-pool stages and a fully connected head."""

    name = "cnn"

    def __init__(
        self,
        height: int = 50,
        width: int = 50,
        points: int = 1,
        channels: tuple[int, ...] = (16, 32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__(height, width, points)
        _single_point_only(self.name, points)
        layers: list[nn.Module] = []
        in_channels, h, w = 1, height, width
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels, h, w = out_channels, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * h * w, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))  # (N, 2) normalised (u, v)

    def loss(self, images: Tensor, points: Tensor) -> Tensor:
        return F.mse_loss(self(images), to_normalized(points[:, 0], self.height, self.width))

    def predict(self, images: Tensor) -> Tensor:
        self.check_input(images)
        return from_normalized(self(images), self.height, self.width)[:, None, :]


class CoordConvRegressor(CNNRegressor):
    """CoordConv (Liu et al. 2018): the baseline with x and y coordinate channels added."""

    name = "coordconv"

    def __init__(self, height: int = 50, width: int = 50, points: int = 1, **kwargs: Any) -> None:
        super().__init__(height, width, points, **kwargs)
        first = self.features[0]
        assert isinstance(first, nn.Conv2d)
        self.features[0] = nn.Conv2d(3, first.out_channels, 3, padding=1)
        ys = torch.linspace(-1.0, 1.0, height)[:, None].expand(height, width)
        xs = torch.linspace(-1.0, 1.0, width)[None, :].expand(height, width)
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        coords = self.get_buffer("coords").expand(images.shape[0], -1, -1, -1)
        return super().forward(torch.cat([images, coords], dim=1))


class HeatmapLocalizer(PointModel):
    """Fully convolutional heatmap read out by a spatial soft-argmax (DSNT / integral regression).

    Translation-equivariant, so it finds points where it never saw one and takes images of
    any size. The loss is the coordinate MSE of the global soft-argmax plus a per-pixel
    cross-entropy that drives the heatmap towards the target itself, which makes the readout
    exact rather than merely close: the global soft-argmax of a diffuse heatmap is pulled
    towards the image centre, most at the border, and a sharp heatmap has no such pull.
    Prediction takes the K highest local maxima and refines each with a soft-argmax over a
    small window around it, clipped to the image, so distant clutter cannot pull it either.
    """

    name = "heatmap"
    fixed_size = False

    def __init__(
        self,
        height: int = 50,
        width: int = 50,
        points: int = 1,
        channels: int = MODEL_SIZES["heatmap"]["channels"],
        depth: int = MODEL_SIZES["heatmap"]["depth"],
        window: int = 2,
    ) -> None:
        super().__init__(height, width, points)
        self.window = window
        self.body = conv_stack(channels, depth, outputs=1)

    def forward(self, images: Tensor) -> Tensor:
        images = images.contiguous(memory_format=torch.channels_last)
        return self.body(images)[:, 0]  # (N, H, W) logits

    def loss(self, images: Tensor, points: Tensor) -> Tensor:
        logits = self(images)
        n, height, width = logits.shape
        log_probs = F.log_softmax(logits.reshape(n, -1), dim=1)
        target = splat(points, height, width).reshape(n, -1)
        cross_entropy = -(target * log_probs).sum(1).mean()
        if points.shape[1] != 1:
            return cross_entropy
        probs = log_probs.exp().reshape(n, height, width)
        xs = torch.arange(width, dtype=probs.dtype, device=probs.device)
        ys = torch.arange(height, dtype=probs.dtype, device=probs.device)
        expected = torch.stack([(probs.sum(1) * xs).sum(1), (probs.sum(2) * ys).sum(1)], dim=1)
        mse = F.mse_loss(to_normalized(expected, height, width), to_normalized(points[:, 0], height, width))
        return cross_entropy + mse

    def predict(self, images: Tensor) -> Tensor:
        self.check_input(images)
        return peaks_to_points(self(images), self.points, self.window)


def splat(points: Tensor, height: int, width: int) -> Tensor:
    """(N, H, W) target distribution: each point's mass 1/K split bilinearly over 4 pixels.

    Its mean is the points' mean exactly, and for a point on a pixel centre it is one-hot.
    """
    n, k, _ = points.shape
    target = points.new_zeros(n, height * width)
    x = points[..., 0].clamp(0, width - 1)
    y = points[..., 1].clamp(0, height - 1)
    x0 = x.floor().clamp(max=width - 2)
    y0 = y.floor().clamp(max=height - 2)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        index = (y0 + dy) * width + (x0 + dx)
        target.scatter_add_(1, index, weight / k)
    return target.reshape(n, height, width)


def strongest_peaks(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(rows, columns), each (N, K): the K strongest local maxima of (N, H, W) logits."""
    n, height, width = logits.shape
    flat = logits.reshape(n, -1)
    if k == 1:
        peak = flat.argmax(1, keepdim=True)  # (N, 1)
    else:
        pooled = F.max_pool2d(logits[:, None], 3, stride=1, padding=1)[:, 0].reshape(n, -1)
        suppressed = torch.where(flat == pooled, flat, torch.full_like(flat, -math.inf))
        peak = suppressed.topk(k, dim=1).indices  # (N, K)
    return peak // width, peak % width


def peaks_to_points(logits: Tensor, k: int, radius: int) -> Tensor:
    """(N, K, 2) points: the K strongest local maxima, each refined by a local soft-argmax."""
    n, height, width = logits.shape
    flat = logits.reshape(n, -1)
    py, px = strongest_peaks(logits, k)
    offsets = torch.arange(-radius, radius + 1, device=logits.device)
    dx = offsets[None, None, None, :]  # window columns
    dy = offsets[None, None, :, None]  # window rows
    # the window is clipped to the image: the heatmap is a distribution over in-image pixels
    inside = (px[..., None, None] + dx >= 0) & (px[..., None, None] + dx < width)
    inside = inside & (py[..., None, None] + dy >= 0) & (py[..., None, None] + dy < height)
    cols = (px[..., None, None] + dx).clamp(0, width - 1)
    rows = (py[..., None, None] + dy).clamp(0, height - 1)
    values = flat.gather(1, (rows * width + cols).reshape(n, -1)).reshape(inside.shape)
    values = values.masked_fill(~inside, -math.inf)
    weights = torch.softmax(values.reshape(n, k, -1), dim=-1).reshape(inside.shape)
    x = px + (weights * dx).sum((-2, -1))
    y = py + (weights * dy).sum((-2, -1))
    return torch.stack([x, y], dim=-1).to(logits.dtype)


def conv_stack(channels: int, depth: int, outputs: int, inputs: int = 1) -> nn.Sequential:
    """`depth` 3x3 convolutions with ReLU between: `inputs` channels in, `channels` wide, `outputs` out."""
    least, most = SIZE_LIMITS["depth"]
    if not least <= depth <= most:
        raise PixelregError(f"depth must be {least} to {most}, got {depth}")
    layers: list[nn.Module] = [nn.Conv2d(inputs, channels, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(channels, outputs, 3, padding=1))
    return nn.Sequential(*layers)


def _single_point_only(name: str, points: int) -> None:
    if points != 1:
        raise PixelregError(
            f"the {name} model predicts one point per image, but the data has {points}; "
            "use --model heatmap for several points"
        )
