"""Architectures that map images to points, and a registry to build them by name.

Every model takes float32 images (N, 1, H, W) in [0, 1] and offers:
- `loss(images, points)`: the training objective for true points (N, K, 2) in pixels;
- `predict(images)`: points (N, K, 2) in pixels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .camera import Camera
from .config import DEFAULT_MODEL, MODEL_SIZES, SIZE_LIMITS, STRIDES
from .data import from_normalized, to_normalized
from .deblend import SpotShape
from .errors import PixelregError
from .photons import background_level


class PointModel(nn.Module):
    """Base class: a model that locates `points` bright points in an image."""

    fixed_size = True  # whether the model only takes the image size it was built for

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
        self.features[0] = nn.Conv2d(3, first.out_channels, 3, padding=1)
        ys = torch.linspace(-1.0, 1.0, height)[:, None].expand(height, width)
        xs = torch.linspace(-1.0, 1.0, width)[None, :].expand(height, width)
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        coords = self.coords.expand(images.shape[0], -1, -1, -1)
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


class OffsetLocalizer(PointModel):
    """A detection map beside per-pixel sub-pixel offsets (DECODE, Speiser et al. 2021, in small).

    Each pixel predicts a logit that a spot lies in it, the spot's offset (dx, dy) from the
    pixel's centre and the log of each offset's expected error. Training: cross-entropy of the
    detection map against the spots' pixels, plus the Gaussian negative log-likelihood of the
    offsets at each spot's pixel and its eight neighbours, so that a neighbour that noise makes
    the peak still points at the spot. Reading: the K strongest local maxima of the maps
    averaged over the image's mirror images; each is the mean of the positions that it and its
    eight neighbours point at, weighed by their detection probability. The offsets are read
    from the image around the spot, not from the shape of a heatmap, so nothing pulls them
    towards pixel centres (no pixel locking).
    """

    name = "offsets"
    fixed_size = False
    INPUT_GAIN = 8.0  # images arrive in [0, 1]; spots in noise are a few hundredths of that
    NEIGHBOUR_WEIGHT = 1.0  # weight of the offsets at the 8 pixels around each spot's own
    OFFSET_WEIGHT = 1.0  # weight of the offsets' log-likelihood against the detection's
    LOG_SIGMA_RANGE = (-6.0, 2.0)  # the expected error of an offset, 0.0025 to 7 px, as a log
    TRAIN_CROP = 24  # training sees this window around a lone spot: a fifth of the work at 50x50
    CROP_MARGIN = 4  # least distance of the spot from a window edge that is not the image's
    COUNT_CROP = 32  # counting: training sees a random window this size of each image
    CANDIDATE_FLOOR = 0.05  # counting: detections less confident than this are never kept

    def __init__(
        self,
        height: int = 50,
        width: int = 50,
        points: int = 1,
        channels: int = MODEL_SIZES["offsets"]["channels"],
        depth: int = MODEL_SIZES["offsets"]["depth"],
        counting: bool = False,
        stride: int = 1,
        mirror: bool = True,
    ) -> None:
        super().__init__(height, width, points)
        if stride not in STRIDES:
            raise PixelregError(f"stride must be one of {', '.join(map(str, STRIDES))}, got {stride}")
        # stride s: the network reads cells of s x s pixels (s^2 channels in) and answers for each
        # of their pixels (5 s^2 channels out): s^2 times fewer positions, for movies
        self.stride = stride
        self.body = conv_stack(channels, depth, outputs=5 * stride * stride, inputs=stride * stride)
        # counting: each pixel says on its own whether a spot lies in it (any number per image,
        # none included); otherwise the detection map is one distribution over the image
        self.counting = counting
        self.threshold = 0.5  # counting: the least confidence kept by `predict` (the checkpoint's)
        self.merge_radius = SPOT_RADIUS  # counting: votes nearer than this make one spot (the checkpoint's)
        # read each image with its mirror images too (`output_maps`); validation reads as the
        # model will be read, so that the threshold it chooses fits (--no-mirror: for movies)
        self.mirror = mirror
        # inference: the convolutions in bfloat16 where the hardware does it natively, the maps
        # out in float32 (`inference.set_precision`; predict --precision)
        self.bf16 = False

    def forward(self, images: Tensor, level: Tensor | None = None) -> Tensor:
        """(N, 5, H, W): detection logit, x and y offset, log of their expected errors, per pixel.
        `level` (N,): each image's background, or (N, 1, H, W) a map of it (`background_map`);
        None: its median (a tile of a frame is given its frame's, so that tiles read as the whole
        frame would)."""
        if level is None:
            level = background_level(images.flatten(1))
        if level.dim() == 1:
            level = level[:, None, None, None]
        x = (images - level) * self.INPUT_GAIN
        if self.stride == 1:
            return self._body(x.contiguous(memory_format=torch.channels_last))
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % self.stride, 0, -height % self.stride))  # whole cells, of background
        x = F.pixel_unshuffle(x, self.stride).contiguous(memory_format=torch.channels_last)
        return cells_to_pixels(self._body(x), self.stride)[..., :height, :width]

    def _body(self, x: Tensor) -> Tensor:
        if not self.bf16 or self.training:
            return self.body(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.body(x).float()

    def output_maps(self, images: Tensor, level: Tensor | None = None) -> Tensor:
        """The maps that detections are read from: `mirrored_output`, or with `mirror` off the
        network's one reading (four times faster, for movies)."""
        return self.mirrored_output(images, level) if self.mirror else self(images, level)

    def mirrored_output(self, images: Tensor, level: Tensor | None = None) -> Tensor:
        """The output maps averaged over the image and its three mirror images (left-right,
        upside down, both), each mirrored back, with the offsets' signs to match.

        The mean of four readings of one spot, each with its own small errors of the network:
        0.3 to 0.7% closer to the bound at four times the cost.
        """
        total = self(images, level)
        for dims in ((-1,), (-2,), (-1, -2)):
            mirrored_level = level.flip(dims) if level is not None and level.dim() == 4 else level
            out = self(images.flip(dims), mirrored_level).flip(dims)
            for dim, channel in ((-1, 1), (-2, 2)):  # an x flip turns dx round, a y flip dy
                if dim in dims:
                    out[:, channel] = -out[:, channel]
            total = total + out
        return total / 4

    def loss(self, images: Tensor, points: Tensor) -> Tensor:
        if self.counting:
            return self.counting_loss(images, points)
        if self.training and points.shape[1] == 1:
            images, points = crop_around(images, points, self.TRAIN_CROP, self.CROP_MARGIN)
        if self.training:
            images, points = mirror_at_random(images, points)
        out = self(images)
        n, _, height, width = out.shape
        k = points.shape[1]
        cells = torch.floor(points + 0.5).long()  # (N, K, 2): the pixel each spot falls in
        cx, cy = cells[..., 0].clamp(0, width - 1), cells[..., 1].clamp(0, height - 1)
        target = torch.zeros(n, height * width, dtype=out.dtype, device=out.device)
        target.scatter_add_(1, cy * width + cx, torch.full_like(points[..., 0], 1.0 / k))
        detection = -(target * F.log_softmax(out[:, 0].reshape(n, -1), dim=1)).sum(1).mean()
        rows = torch.arange(n, device=out.device)[:, None]
        offsets = out.new_zeros(())
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                x, y = (cx + dx).clamp(0, width - 1), (cy + dy).clamp(0, height - 1)
                predicted = out[rows, 1:3, y, x]  # (N, K, 2)
                log_sigma = out[rows, 3:5, y, x].clamp(*self.LOG_SIGMA_RANGE)
                wanted = points - torch.stack([x, y], -1).to(points.dtype)
                weight = 1.0 if dx == dy == 0 else self.NEIGHBOUR_WEIGHT
                # Gaussian negative log-likelihood: the squared error weighed by the expected
                # precision, so bright spots (errors of hundredths) count as much as dim ones
                nll = (predicted - wanted) ** 2 / (2 * torch.exp(2 * log_sigma)) + log_sigma
                offsets = offsets + weight * nll.sum(-1).mean()
        return detection + self.OFFSET_WEIGHT * offsets

    def counting_loss(self, images: Tensor, points: Tensor) -> Tensor:
        """Per-pixel binary cross-entropy of the detection map against the pixels that hold a spot,
        plus the offsets' Gaussian negative log-likelihood at each spot's pixel and at each
        neighbour that lies nearer to it than to any other spot; both summed over the spots of
        an image. points: (N, K, 2), NaN rows for absent spots."""
        trained = None  # (N, H, W): the pixels the loss sees; None: all of them
        if self.training:
            images, points = mirror_at_random(images, points)
            images, points, trained = crop_at_random(images, points, self.COUNT_CROP, self.CROP_MARGIN)
        out = self(images)
        n, _, height, width = out.shape
        if trained is None:
            trained = torch.ones(n, height, width, dtype=torch.bool, device=out.device)
        present = torch.isfinite(points[..., 0])  # (N, K)
        spots = torch.where(present[..., None], points, torch.zeros_like(points))
        cells = torch.floor(spots + 0.5).long()
        cx, cy = cells[..., 0].clamp(0, width - 1), cells[..., 1].clamp(0, height - 1)
        target = torch.zeros(n, height * width, dtype=out.dtype, device=out.device)
        target.scatter_add_(1, cy * width + cx, present.to(out.dtype)).clamp_(max=1.0)
        logits = out[:, 0].reshape(n, -1)
        detection = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        detection = (detection * trained.reshape(n, -1)).sum() / n
        present = present & trained[torch.arange(n, device=out.device)[:, None], cy, cx]
        far = torch.where(present, 0.0, math.inf).to(spots.dtype)[:, None, :]  # absent: never nearest
        rows = torch.arange(n, device=out.device)[:, None]
        offsets = out.new_zeros(())
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                x, y = (cx + dx).clamp(0, width - 1), (cy + dy).clamp(0, height - 1)
                pixel = torch.stack([x, y], -1).to(spots.dtype)  # (N, K, 2)
                reach = ((pixel[:, :, None, :] - spots[:, None, :, :]) ** 2).sum(-1) + far  # (N, K, K)
                own = present & (reach.argmin(-1) == torch.arange(spots.shape[1], device=out.device))
                predicted = out[rows, 1:3, y, x]  # (N, K, 2)
                log_sigma = out[rows, 3:5, y, x].clamp(*self.LOG_SIGMA_RANGE)
                nll = (predicted - (spots - pixel)) ** 2 / (2 * torch.exp(2 * log_sigma)) + log_sigma
                offsets = offsets + (nll.sum(-1) * own).sum() / n
        return detection + self.OFFSET_WEIGHT * offsets

    def predict(self, images: Tensor) -> Tensor:
        self.check_input(images)
        if self.counting:  # the detections at the chosen threshold, padded with NaN
            points, confidence = self.detect(images)
            return points.masked_fill((confidence < self.threshold)[..., None], math.nan)
        return self.read_points(self.output_maps(images))

    def detect(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every detection at least CANDIDATE_FLOOR confident: points (N, M, 2), padded with NaN,
        and their confidence (N, M) in [0, 1], padded with 0, most confident first."""
        return self.detect_at_radii(images, (self.merge_radius,))[0]

    def detect_at_radii(
        self, images: Tensor, radii: Sequence[float], level: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """`detect` once for each merge radius, from one run of the network."""
        self.check_input(images)
        out = self.output_maps(images, level)
        return [read_detections(out, self.CANDIDATE_FLOOR, radius) for radius in radii]

    def read_points(self, out: Tensor) -> Tensor:
        """(N, K, 2) points from the output maps: at each of the K strongest detections, the
        mean of the positions that it and its eight neighbours point at, weighed by detection."""
        n, _, height, width = out.shape
        py, px = strongest_peaks(out[:, 0], self.points)  # (N, K)
        rows = torch.arange(n, device=out.device)[:, None, None]
        step = torch.tensor([-1, 0, 1], device=out.device)
        ys = (py[..., None] + step.repeat_interleave(3)).clamp(0, height - 1)  # (N, K, 9)
        xs = (px[..., None] + step.repeat(3)).clamp(0, width - 1)
        # each pixel around the peak points at the spot on its own: weigh them by the detection
        weights = torch.softmax(out[rows, 0, ys, xs], dim=-1)  # (N, K, 9)
        estimates = torch.stack([xs, ys], -1).to(out.dtype) + out[rows, 1:3, ys, xs]  # (N, K, 9, 2)
        return (weights[..., None] * estimates).sum(-2)


VOTE_FLOOR = 0.02  # pixels less probable than this cast no vote
VOTE_KERNEL = 0.35  # px: the width of each vote when the density of votes is measured
SPOT_RADIUS = 1.0  # px: a vote joins the nearest densest vote (a spot) within this distance
DOMINANCE = 4.0  # a pixel this many times surer, voting within SPOT_RADIUS, leaves no spot beside it
MERGE_RADII = (1.0, 0.7, 0.5, 0.4, 0.3)  # the radii that training tries on validation, surest first
VOTES_PER_PIXEL = 0.25  # the most probable pixels vote, at most this share of an image's: no frame
# holds a spot in every 4 pixels that could be told apart, and an untrained model stays cheap
VOTE_PAIRS = 2**24  # the most pairs of votes compared at once (about 1 GB): beyond, the least sure go
PAIR_BINS = 2  # votes are compared with those in the bins this many bins away, bins of the largest radius


def cells_to_pixels(cells: Tensor, stride: int) -> Tensor:
    """`F.pixel_shuffle`: maps of s x s cells (N, C s^2, H, W) as maps of pixels (N, C, H s, W s),
    as a view and one copy (a third of its time on channels-last maps)."""
    n, channels, height, width = cells.shape
    split = cells.view(n, channels // stride**2, stride, stride, height, width)
    return split.permute(0, 1, 4, 2, 5, 3).reshape(n, channels // stride**2, height * stride, width * stride)


def read_detections(out: Tensor, floor: float, radius: float = SPOT_RADIUS) -> tuple[Tensor, Tensor]:
    """Detections from the output maps of a counting model, found where the pixels point.

    Each pixel votes, with its detection probability, for the position it points at (pixel
    plus offset). A spot is a vote densest among the votes within SPOT_RADIUS; each vote joins
    the nearest such spot within that radius. A spot's confidence is the probability of its
    votes summed (a spot near a pixel border splits its probability between pixels, and every
    one of them points at it), capped at 1; its position the mean of the places that the pixels
    around its own point at, weighed by their odds p / (1 - p). Two spots whose probabilities
    run into one ridge of pixels are still told apart, by where the pixels point. `radius`
    (SPOT_RADIUS by default): a model that points sharply tells spots apart at smaller ones,
    so training chooses it on validation, from MERGE_RADII.

    Votes are compared only with the votes near them (`_vote_pairs`), so that the work grows
    with the number of votes, not with its square: a frame is read whole, however large.
    Returns points (N, M, 2), padded with NaN, and confidence (N, M), most confident first.
    """
    n, _, height, width = out.shape
    image, where, weight, aim = _votes(out)
    reach = max(radius, SPOT_RADIUS)
    found = _vote_pairs(aim, image, reach, n, height, width)
    if found is not None:  # the usual case: every image's votes compared at once
        points, confidence = _spots_of_votes(aim, weight, where, found, radius)
    else:  # too many pairs at once: a few images at a time, each as it would be alone
        image, points, confidence = _spots_in_groups(
            image, where, weight, aim, reach, radius, (n, height, width)
        )
    spot = confidence >= max(floor, 1e-12)
    image, points, confidence = image[spot], points[spot], confidence[spot]
    order, slot = _ranked(image, confidence, n)  # most confident first
    image, points, confidence = image[order], points[order], confidence[order]
    most = max(1, int(slot.max()) + 1 if len(slot) else 1)
    points_out = torch.full((n, most, 2), math.nan, dtype=out.dtype, device=out.device)
    confidence_out = torch.zeros((n, most), dtype=out.dtype, device=out.device)
    points_out[image, slot] = points.to(out.dtype)
    confidence_out[image, slot] = confidence.to(out.dtype)
    return points_out, confidence_out


OFF_IMAGE = 2.0  # px: a vote aimed farther than this outside its image points at no spot to find


def _votes(out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The votes of output maps (N, 5, H, W): image (V,), voting pixel (V, 2), weight (V,) and
    aim (V, 2), each image's together, the surest first (a vote's rank breaks ties of density),
    at most VOTES_PER_PIXEL of an image's pixels. A broken network's NaN offsets, or offsets
    that point well off the image, cast none."""
    n, _, height, width = out.shape
    prob = torch.sigmoid(out[:, 0].float()).reshape(n, height * width)
    image, pixel = torch.nonzero(prob >= VOTE_FLOOR, as_tuple=True)
    weight = prob[image, pixel]
    order, rank = _ranked(image, weight, n)
    image, pixel, weight = image[order], pixel[order], weight[order]
    kept = rank < max(1, int(VOTES_PER_PIXEL * height * width))
    image, pixel, weight = image[kept], pixel[kept], weight[kept]
    where = torch.stack([pixel % width, pixel // width], -1).to(prob.dtype)
    aim = where + out[:, 1:3].float().flatten(2)[image, :, pixel]
    far = aim.new_tensor([width, height]) - 0.5 + OFF_IMAGE  # pixel centres lie at 0 .. width - 1
    pointing = ((aim >= -0.5 - OFF_IMAGE) & (aim <= far)).all(-1)  # and not NaN
    return image[pointing], where[pointing], weight[pointing], aim[pointing]


def _ranked(image: Tensor, score: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The order that puts items of images `image` (of n) together, image by image, the highest
    `score` (in [0, 1]) first, ties as they come; and each item's rank within its image, in
    that order."""
    order = torch.argsort(image.double() * 2 - score.double(), stable=True)
    image = image[order]
    counts = torch.bincount(image, minlength=n)
    first_of_each = torch.cumsum(counts, 0) - counts
    return order, torch.arange(len(image), device=image.device) - first_of_each[image]


def _bins(aim: Tensor, image: Tensor, reach: float, n: int, height: int, width: int) -> tuple[Tensor, ...]:
    """The votes sorted into bins of side `reach`, each image's apart: the order that sorts them
    by bin, and for each vote and each bin up to PAIR_BINS away (V x bins,), where that bin's
    votes start in that order and how many there are."""
    # aims just off the image fall in its outermost bins: the bins of two aims come no farther apart
    cols, rows = (math.ceil(side / reach) + 2 + 2 * PAIR_BINS for side in (width, height))
    x, y = (
        torch.floor(aim[:, axis] / reach).clamp(-1, limit - 2 * PAIR_BINS - 2).long() + PAIR_BINS + 1
        for axis, limit in ((0, cols), (1, rows))
    )
    key = (image * rows + y) * cols + x
    in_bin = torch.bincount(key, minlength=n * rows * cols)
    step = torch.arange(-PAIR_BINS, PAIR_BINS + 1, device=aim.device)
    around = (key[:, None] + (step[:, None] * cols + step[None, :]).flatten()).flatten()
    return torch.argsort(key), (torch.cumsum(in_bin, 0) - in_bin)[around], in_bin[around]


def _vote_pairs(
    aim: Tensor, image: Tensor, reach: float, n: int, height: int, width: int
) -> tuple[Tensor, Tensor] | None:
    """(v, u): every pair of votes of one image whose aims lie within `reach` of each other, and
    more (each vote with itself too): each vote meets the votes in the bins up to PAIR_BINS
    away (`_bins`), all those nearer than PAIR_BINS x reach. The density of votes misses only
    farther ones, whose kernel is below 1e-7 of their weight. None where there would be more
    than VOTE_PAIRS pairs."""
    sorter, first, count = _bins(aim, image, reach, n, height, width)
    if int(count.sum()) > VOTE_PAIRS:
        return None
    v = torch.arange(len(aim), device=aim.device).repeat_interleave((2 * PAIR_BINS + 1) ** 2)
    v = torch.repeat_interleave(v, count)
    first = torch.repeat_interleave(first, count)
    within = torch.arange(len(v), device=aim.device) - torch.repeat_interleave(
        torch.cumsum(count, 0) - count, count
    )
    return v, sorter[first + within]


def _spots_in_groups(
    image: Tensor,
    where: Tensor,
    weight: Tensor,
    aim: Tensor,
    reach: float,
    radius: float,
    size: tuple[int, ...],
) -> tuple[Tensor, Tensor, Tensor]:
    """`_spots_of_votes` for votes of too many pairs to compare at once: images in groups of at
    most VOTE_PAIRS pairs, and an image of more alone (a model whose votes crowd together) read
    from its surest votes, halved until they fit. Returns each vote's image, spot and confidence."""
    n, height, width = size
    per_vote = _bins(aim, image, reach, n, height, width)[2].view(len(aim), -1).sum(1)
    per_image = torch.zeros(n, dtype=torch.long, device=aim.device).index_add_(0, image, per_vote).tolist()
    groups, start, total = [], 0, 0
    for i, pairs in enumerate(per_image):
        if i > start and total + pairs > VOTE_PAIRS:
            groups.append((start, i))
            start, total = i, 0
        total += pairs
    groups.append((start, n))
    parts = []
    for first, stop in groups:
        mine = (image >= first) & (image < stop)
        votes = [image[mine], where[mine], weight[mine], aim[mine]]
        while (pairs := _vote_pairs(votes[3], votes[0], reach, n, height, width)) is None:
            surest = torch.topk(votes[2], len(votes[2]) // 2).indices.sort().values  # in their order
            votes = [part[surest] for part in votes]
        parts.append((votes[0], *_spots_of_votes(votes[3], votes[2], votes[1], pairs, radius)))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def _spots_of_votes(
    aim: Tensor, weight: Tensor, where: Tensor, pairs: tuple[Tensor, Tensor], radius: float
) -> tuple[Tensor, Tensor]:
    """(V, 2) spot positions and (V,) confidences (0: no spot) from votes at `aim` of `weight`,
    cast by the pixels at `where`, compared in `pairs` (`_vote_pairs`; a vote ranks before
    another of its image if it comes first): the modes of the votes' density, each gathering
    the votes nearest to it within SPOT_RADIUS (or `radius`, when larger). Only the pixels
    around the mode's own pixel, whose offsets training taught, place it; farther pixels that
    point at it add to its confidence only."""
    v, u = pairs
    count = len(aim)
    gap = (aim[v] - aim[u]).norm(dim=-1)
    # far votes add nothing: exp of an argument below -87 takes a slow path (subnormal results)
    exponent = -(gap**2) / (2 * VOTE_KERNEL**2)
    kernel = torch.exp(exponent.clamp(min=-80.0)).masked_fill_(exponent < -80.0, 0.0)
    density = torch.zeros_like(weight).index_add_(0, v, weight[u] * kernel)
    # vote v is beaten by u when u is denser (or as dense and ranked before it, to break ties)
    beaten = (density[u] > density[v]) | ((density[u] == density[v]) & (u < v))
    # within SPOT_RADIUS a denser vote of a far surer pixel beats it too: the stray votes of a
    # spot's rim, farther than a small radius from its centre, make no spots of their own
    surer = weight[u] > DOMINANCE * weight[v]
    loses = beaten & ((gap < radius) | ((gap < SPOT_RADIUS) & surer))
    mode = (
        torch.zeros(count, dtype=torch.bool, device=aim.device).index_fill_(0, v[loses], True).logical_not_()
    )
    to_mode = gap.masked_fill(~mode[u], math.inf)  # distance of each vote to each mode
    nearest = torch.full_like(weight, math.inf).scatter_reduce_(0, v, to_mode, "amin")
    closest = mode[u] & (to_mode == nearest[v])  # of modes as near, the first in rank
    owner = torch.full((count,), count, device=aim.device).scatter_reduce_(0, v[closest], u[closest], "amin")
    joins = nearest < max(radius, SPOT_RADIUS)
    owner = torch.where(joins, owner, torch.arange(count, device=aim.device))
    mass = torch.zeros_like(weight).index_add_(0, owner, weight * joins)
    home = torch.floor(aim[owner] + 0.5)  # its mode's pixel
    taught = joins & ((where - home).abs().amax(-1) <= 1)
    # placed by the odds p / (1 - p), as the softmax of the logits places a lone spot: the surest
    # pixels count most (3% nearer the bound than weighing by p, measured at blur 1)
    odds = weight / (1 - weight).clamp(min=1e-6) * taught
    placed = torch.zeros_like(weight).index_add_(0, owner, odds)
    total = torch.zeros_like(aim).index_add_(0, owner, odds[:, None] * aim)
    points = torch.where((placed > 0)[:, None], total / placed.clamp(min=1e-12)[:, None], aim)
    confidence = torch.where(mode, mass.clamp(max=1.0), torch.zeros_like(mass))
    return points, confidence


def crop_at_random(images: Tensor, points: Tensor, size: int, margin: int) -> tuple[Tensor, Tensor, Tensor]:
    """A random `size` x `size` window of each image (the whole image along a side no longer
    than `size`), the points in the window's coordinates (those outside it NaN), and which
    pixels (N, size, size) to train on: all but those within `margin` of a window edge that is
    not an image edge, where a spot just outside the window, unlabelled, shows half its light."""
    n, _, height, width = images.shape
    if height <= size and width <= size:
        return images, points, torch.ones(n, height, width, dtype=torch.bool, device=images.device)
    rows_kept, cols_kept = min(size, height), min(size, width)
    # a window touches each image edge about one time in six, not one in (extent - size + 1): the
    # pixels at the image's edges, where a spot shows part of its light, get their share of training
    pull = size // 4
    y0 = torch.randint(-pull, height - rows_kept + pull + 1, (n,), device=images.device)
    x0 = torch.randint(-pull, width - cols_kept + pull + 1, (n,), device=images.device)
    y0, x0 = y0.clamp(0, height - rows_kept), x0.clamp(0, width - cols_kept)
    windows = window_at(images, x0, y0, rows_kept, cols_kept)
    shifted = points - torch.stack([x0, y0], -1).to(points.dtype)[:, None, :]
    limit = torch.tensor([cols_kept, rows_kept], device=points.device, dtype=points.dtype) - 0.5
    outside = ((shifted < -0.5) | (shifted >= limit)).any(-1)  # NaN compares False: stays NaN
    trained_rows = _away_from_cut(y0, rows_kept, height, margin)  # (N, rows)
    trained_cols = _away_from_cut(x0, cols_kept, width, margin)  # (N, cols)
    trained = trained_rows[:, :, None] & trained_cols[:, None, :]
    return windows, shifted.masked_fill(outside[..., None], math.nan), trained


def window_at(images: Tensor, x0: Tensor, y0: Tensor, rows: int, cols: int) -> Tensor:
    """(N, 1, rows, cols): of each image (N, 1, H, W) the window whose top-left pixel is (x0, y0)."""
    index = torch.arange(images.shape[0], device=images.device)[:, None, None]
    ys = (y0[:, None] + torch.arange(rows, device=images.device))[:, :, None]
    xs = (x0[:, None] + torch.arange(cols, device=images.device))[:, None, :]
    return images[:, 0][index, ys, xs].unsqueeze(1)


def _away_from_cut(start: Tensor, kept: int, extent: int, margin: int) -> Tensor:
    """(N, kept) bool: which places of a window along one axis lie at least `margin` from each
    end of the window that cuts the image (an end that is also the image's own end does not)."""
    place = torch.arange(kept, device=start.device)[None, :]
    from_low = (place >= margin) | (start[:, None] == 0)
    from_high = (kept - 1 - place >= margin) | (start[:, None] + kept == extent)
    return from_low & from_high


def crop_around(images: Tensor, points: Tensor, size: int, margin: int) -> tuple[Tensor, Tensor]:
    """A random `size` x `size` window of each image that holds its first spot, at least
    `margin` pixels inside any window edge that is not also an image edge, and the points in
    the window's coordinates.

    A fully convolutional model sees the same thing at every place, so it learns as much from
    the window as from the whole image, in a fraction of the time.
    """
    n, _, height, width = images.shape
    corners = []
    for axis, extent in ((0, width), (1, height)):
        if extent <= size:
            corners.append(torch.zeros(n, dtype=torch.long, device=images.device))
            continue
        cell = torch.floor(points[:, 0, axis] + 0.5).long().clamp(0, extent - 1)
        low = (cell - (size - 1 - margin)).clamp(0, extent - size)
        high = (cell - margin).clamp(0, extent - size)
        draw = torch.rand(n, device=images.device)
        corners.append(low + torch.floor(draw * (high - low + 1).to(draw.dtype)).long().clamp(max=high - low))
    x0, y0 = corners
    windows = window_at(images, x0, y0, min(size, height), min(size, width))
    shift = torch.stack([x0, y0], -1).to(points.dtype)[:, None, :]
    return windows, points - shift


def mirror_at_random(images: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Each image flipped left-right, upside down and (if square) transposed, each at random,
    with its points moved to match: eight times the data, exactly, for a symmetric spot in
    noise that is the same everywhere."""
    n, _, height, width = images.shape
    points = points.clone()
    for axis, extent, dim in ((0, width, -1), (1, height, -2)):
        flip = torch.rand(n, device=images.device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(dim), images)
        points[..., axis] = torch.where(flip[:, None], extent - 1 - points[..., axis], points[..., axis])
    if height == width:
        swap = torch.rand(n, device=images.device) < 0.5
        images = torch.where(swap[:, None, None, None], images.transpose(-1, -2), images)
        points = torch.where(swap[:, None, None], points.flip(-1), points)
    return images, points


def _single_point_only(name: str, points: int) -> None:
    if points != 1:
        raise PixelregError(
            f"the {name} model predicts one point per image, but the data has {points}; "
            "use --model heatmap for several points"
        )


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
    return MODELS[name](**kwargs).to(memory_format=torch.channels_last)
