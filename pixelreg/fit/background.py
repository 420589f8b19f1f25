"""A frame's background: its level (a median) and, for large frames, a map of block medians."""

from __future__ import annotations

import numpy as np
import torch

LEVEL_SAMPLES = 2**16  # a larger image's background is the median of this many of its pixels, evenly spread


def background_level(flat: torch.Tensor) -> torch.Tensor:
    """(N,) each image's background, as the models take it: the median of its pixels (N, P), of
    an even sample of LEVEL_SAMPLES of them in larger images (as exact, a tenth of the time)."""
    if flat.shape[1] >= 2 * LEVEL_SAMPLES:
        flat = flat[:, :: flat.shape[1] // LEVEL_SAMPLES]
    return lower_median(flat)


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """`values.median(-1).values` (of an even count, the lower middle value), on the CPU by
    numpy's partition: in two thirds of the time, and the background of every frame takes it."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return values.median(-1).values
    middle = (values.shape[-1] - 1) // 2
    array = values.detach().numpy()
    median = np.partition(array, middle, axis=-1)[..., middle]
    return torch.from_numpy(
        np.where(np.isnan(array).any(-1), np.nan, median).astype(array.dtype)
    )  # NaN as torch's


LEVEL_BLOCK = 32  # px: a large frame's background is mapped from the medians of blocks this size


def background_map(frames: torch.Tensor, block: int = LEVEL_BLOCK) -> torch.Tensor:
    """(N,) each frame's background level (`background_level`) for frames (N, 1, H, W) up to
    4 blocks a side, the size the models train on; for larger ones, whose illumination or sky
    may vary over the field, a map (N, 1, H, W): the median of each `block` x `block` square,
    smoothly interpolated between the squares' centres."""
    height, width = frames.shape[-2:]
    if min(height, width) < 4 * block:
        return background_level(frames.flatten(1))
    rows, cols = -(-height // block), -(-width // block)
    padded = torch.nn.functional.pad(
        frames, (0, cols * block - width, 0, rows * block - height), mode="replicate"
    )
    squares = padded.unfold(2, block, block).unfold(3, block, block)  # (N, 1, R, C, block, block)
    medians = lower_median(squares.flatten(-2))  # (N, 1, R, C)
    level = torch.nn.functional.interpolate(
        medians, size=(rows * block, cols * block), mode="bilinear", align_corners=False
    )
    return level[..., :height, :width].contiguous()
