"""Spots in a camera's raw frames, found without knowing the camera: local maxima of the smoothed
frame that stand out of its local background by several times its noise. `calibrate` measures the
movie by them, and the simulated twin is measured by them alike."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pixelreg.fit.background import background_map
from pixelreg.fit.classical import gaussian_smooth

DETECTION_SIGMAS = 5.0  # a spot: a local maximum of the smoothed frame this many noise sigmas up
SPOT_BLOCK = 16  # px: spots are found above the medians of blocks this size, which follow the illumination
MASK_RADIUS = 6  # px around a detected spot left out of the camera's statistics


def find_spots(pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Spots in frames (T, 1, H, W) of ADU: local maxima of the smoothed frame DETECTION_SIGMAS
    noise sigmas above its background (S, 4: frame, row, column, height above it), and which
    pixels lie within MASK_RADIUS of one (T, H, W)."""
    found, masks = [], []
    for start in range(0, len(pixels), 16):
        chunk = pixels[start : start + 16]
        smooth = gaussian_smooth(chunk, 1.0)
        level = background_map(smooth, SPOT_BLOCK)
        residual = smooth - (level if level.dim() == 4 else level[:, None, None, None])
        flat = residual.flatten(1)[:, :: max(1, residual[0].numel() // 2**16)]
        noise = 1.4826 * (flat - flat.median(1, keepdim=True).values).abs().median(1).values
        peak = (residual == F.max_pool2d(residual, 5, 1, 2)) & (
            residual > DETECTION_SIGMAS * noise.clamp(min=1e-6)[:, None, None, None]
        )
        where = peak[:, 0].nonzero()
        height = residual[where[:, 0], 0, where[:, 1], where[:, 2]]
        where[:, 0] += start
        found.append(torch.cat([where.double(), height.double()[:, None]], 1))
        size = 2 * MASK_RADIUS + 1
        masks.append(F.max_pool2d(peak.float(), size, 1, MASK_RADIUS)[:, 0] > 0)
    return torch.cat(found).numpy(), torch.cat(masks).numpy()
