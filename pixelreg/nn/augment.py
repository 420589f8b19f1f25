"""Training augmentation: random windows of images and their mirror images, points moved to match.

Points are (N, K, 2) x and y, or (N, K, 2 + E) with E more values of each spot (a depth) that
go along unchanged."""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
    shifted = _moved(points, x0, y0)
    limit = torch.tensor([cols_kept, rows_kept], device=points.device, dtype=points.dtype) - 0.5
    outside = ((shifted[..., :2] < -0.5) | (shifted[..., :2] >= limit)).any(
        -1
    )  # NaN compares False: stays NaN
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
    return windows, _moved(points, x0, y0)


def _moved(points: Tensor, x0: Tensor, y0: Tensor) -> Tensor:
    """The points in the coordinates of windows whose top-left pixels are (x0, y0) (N,)."""
    moved = points.clone()
    moved[..., :2] -= torch.stack([x0, y0], -1).to(points.dtype)[:, None, :]
    return moved


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
        swapped = torch.cat([points[..., [1, 0]], points[..., 2:]], -1)
        points = torch.where(swap[:, None, None], swapped, points)
    return images, points
