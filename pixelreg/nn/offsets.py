"""The offsets model: a detection map with sub-pixel offsets and their uncertainties per pixel
(as DECODE's), and under an astigmatic PSF each spot's depth, for noise, blur, sub-pixel spots
and any count."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelreg.errors import PixelregError
from pixelreg.fit.background import background_level
from pixelreg.nn.architectures import PointModel, conv_stack, strongest_peaks
from pixelreg.nn.augment import crop_around, crop_at_random, mirror_at_random
from pixelreg.nn.config import MODEL_SIZES, STRIDES
from pixelreg.nn.readout import SPOT_RADIUS, cells_to_pixels, read_depths, read_detections


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

    With a `z_range` [LO, HI] (nm; a counting model of spots whose astigmatic PSF tells
    their depth) each pixel also predicts the depth of the spot it points at, scaled to [-1, 1]
    over the range, and the log of its expected error, trained by the same Gaussian negative
    log-likelihood at the same pixels. Such a model neither trains nor reads on mirror images:
    a mirror turns a measured PSF's shape into another depth's.
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
        z_range: list[float] | None = None,
    ) -> None:
        super().__init__(height, width, points)
        if stride not in STRIDES:
            raise PixelregError(f"stride must be one of {', '.join(map(str, STRIDES))}, got {stride}")
        # stride s: the network reads cells of s x s pixels (s^2 channels in) and answers for each
        # of their pixels (5 s^2 channels out): s^2 times fewer positions, for movies
        self.stride = stride
        if z_range is not None and (not counting or len(z_range) != 2 or not z_range[0] < z_range[1]):
            raise PixelregError(f"a depth range is [LO, HI] nm, LO < HI, of a counting model; got {z_range}")
        # the depths a 3D model reads, nm; None: a 2D model
        self.z_range = None if z_range is None else (float(z_range[0]), float(z_range[1]))
        self.maps = (
            5 if self.z_range is None else 7
        )  # detection, dx, dy, their log errors (, z, its log error)
        self.body = conv_stack(channels, depth, outputs=self.maps * stride * stride, inputs=stride * stride)
        # counting: each pixel says on its own whether a spot lies in it (any number per image,
        # none included); otherwise the detection map is one distribution over the image
        self.counting = counting
        self.threshold = 0.5  # counting: the least confidence kept by `predict` (the checkpoint's)
        self.merge_radius = SPOT_RADIUS  # counting: votes nearer than this make one spot (the checkpoint's)
        # read each image with its mirror images too (`output_maps`); validation reads as the
        # model will be read, so that the threshold it chooses fits (--no-mirror: for movies)
        self.mirror = mirror and self.z_range is None
        # inference: the convolutions in bfloat16 where the hardware does it natively, the maps
        # out in float32 (`inference.set_precision`; predict --precision)
        self.bf16 = False

    def forward(self, images: Tensor, level: Tensor | None = None) -> Tensor:
        """(N, 5, H, W): detection logit, x and y offset, log of their expected errors, per pixel;
        with a depth range (N, 7, H, W), the scaled depth and the log of its expected error after.
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
        return (
            self.mirrored_output(images, level)
            if self.mirror and self.z_range is None
            else self(images, level)
        )

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
        an image. points: (N, K, 2), NaN rows for absent spots; a 3D model's (N, K, 3), x, y and
        the depth in nm, whose negative log-likelihood joins the offsets' at the same pixels."""
        trained = None  # (N, H, W): the pixels the loss sees; None: all of them
        if self.training and self.z_range is None:
            images, points = mirror_at_random(images, points)
        if self.training:
            images, points, trained = crop_at_random(images, points, self.COUNT_CROP, self.CROP_MARGIN)
        out = self(images)
        n, _, height, width = out.shape
        if trained is None:
            trained = torch.ones(n, height, width, dtype=torch.bool, device=out.device)
        present = torch.isfinite(points[..., 0])  # (N, K)
        spots = torch.where(present[..., None], points, torch.zeros_like(points))
        depth = self.scaled_depth(spots[..., 2]) if self.z_range is not None else None
        spots = spots[..., :2]
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
                nll = nll.sum(-1)
                if depth is not None:
                    log_sigma_z = out[rows, 6, y, x].clamp(*self.LOG_SIGMA_RANGE)
                    nll = (
                        nll
                        + (out[rows, 5, y, x] - depth) ** 2 / (2 * torch.exp(2 * log_sigma_z))
                        + log_sigma_z
                    )
                offsets = offsets + (nll * own).sum() / n
        return detection + self.OFFSET_WEIGHT * offsets

    def predict(self, images: Tensor) -> Tensor:
        self.check_input(images)
        if self.counting:  # the detections at the chosen threshold, padded with NaN
            points, confidence = self.detect(images)
            return points.masked_fill((confidence < self.threshold)[..., None], math.nan)
        return self.read_points(self.output_maps(images))

    def detect(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every detection at least CANDIDATE_FLOOR confident: points (N, M, 2), padded with NaN,
        and their confidence (N, M) in [0, 1], padded with 0, most confident first. A 3D model's
        points are (N, M, 4): x, y, the depth and its expected error, nm."""
        return self.detect_at_radii(images, (self.merge_radius,))[0]

    def detect_at_radii(
        self, images: Tensor, radii: Sequence[float], level: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """`detect` once for each merge radius, from one run of the network."""
        self.check_input(images)
        out = self.output_maps(images, level)
        found = [read_detections(out, self.CANDIDATE_FLOOR, radius) for radius in radii]
        if self.z_range is None:
            return found
        low, high = self.z_range
        return [
            (
                torch.cat([points, read_depths(out, points, (low + high) / 2, (high - low) / 2)], -1),
                confidence,
            )
            for points, confidence in found
        ]

    def scaled_depth(self, z: Tensor) -> Tensor:
        """Depths in nm as the network learns them: -1 to 1 over the model's depth range."""
        assert self.z_range is not None
        low, high = self.z_range
        return (z - (low + high) / 2) / ((high - low) / 2)

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
