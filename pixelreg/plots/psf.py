"""The figure of a measured PSF: its sections through the middle and its width over depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pixelreg.plots.style import _save  # noqa: E402
from pixelreg.simulate.psf import SampledPSF  # noqa: E402


def plot_psf(psf: SampledPSF, path: Path, title: str = "") -> Path:
    """Draw the PSF's xz and yz sections (the pixel-integrated PSF through its middle, over the
    planes), its in-focus plane, and its Gaussian-equivalent width over depth, to `path` (PNG);
    of a PSF of one plane, the plane and its profiles."""
    k, middle = psf.oversample, (psf.values.shape[1] - 1) // 2
    reach = psf.radius + 1
    low, high = psf.z_range
    unit = "nm"
    sections = psf.planes > 1  # one plane (a movie's PSF) has no depth to cut through
    fig, axes = plt.subplots(1, 4 if sections else 2, figsize=(17 if sections else 9, 4.2))
    ax_plane, ax_width = axes[-2:]
    sharpest = _sharpest(psf)
    extent_z = (-reach, reach, low - psf.z_step / 2, high + psf.z_step / 2)
    for ax, section, name in (
        (axes[0], psf.values[:, middle, :], "x"),
        (axes[1], psf.values[:, :, middle], "y"),
    )[: 2 if sections else 0]:
        ax.imshow(section, origin="lower", aspect="auto", extent=extent_z, cmap="magma")
        ax.set(xlabel=f"{name} (px)", ylabel=f"z ({unit})", title=f"{name}z section through the middle")
    plane = psf.values[sharpest]
    ax_plane.imshow(
        np.log10(np.clip(plane, plane.max() * 1e-4, None)),
        origin="lower",
        extent=(-reach, reach, -reach, reach),
        cmap="magma",
    )
    ax_plane.set(
        xlabel="x (px)",
        ylabel="y (px)",
        title=f"sharpest plane (log10), z {low + sharpest * psf.z_step:.0f} {unit}",
    )
    if psf.planes > 1:
        depths = np.linspace(low, high, min(4 * (psf.planes - 1) + 1, 121))
        widths = [psf.gaussian_sigma(float(z)) for z in depths]
        ax_width.plot(depths, widths, "-", lw=1.5)
        ax_width.set(xlabel=f"z ({unit})", ylabel="Gaussian-equivalent sigma (px)", title="width over depth")
    else:
        steps = (np.arange(psf.values.shape[1]) - middle) / k
        ax_width.plot(steps, plane[middle], "-", lw=1.5, label="x profile")
        ax_width.plot(steps, plane[:, middle], "--", lw=1, label="y profile")
        ax_width.set(
            xlabel="distance from the middle (px)",
            ylabel="share per pixel",
            title="profiles through the middle",
        )
        ax_width.legend(fontsize=8)
    fig.suptitle(
        title
        or f"PSF: {psf.source} (sigma {psf.gaussian_sigma(None if psf.planes == 1 else low + sharpest * psf.z_step):.3f} px in its sharpest plane)"
    )
    fig.tight_layout()
    return _save(fig, path)


def _sharpest(psf: SampledPSF) -> int:
    """The plane of the highest peak."""
    return int(np.argmax(psf.values.max((1, 2))))


def plot_phase_bias(bias: dict[str, Any], path: Path) -> Path:
    """`bench psf`'s phase bias: each model's mean x and y error against the true sub-pixel
    phase, with a band of one standard error, and the goal's band of 0.01 px."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name, measured in bias.items():
        phase = np.asarray(measured["phase"])
        mean, error = np.asarray(measured["bias_px"]), np.asarray(measured["error_px"])
        for axis, ax in enumerate(axes):
            (line,) = ax.plot(
                phase, mean[axis], "o-", ms=4, label=f"{name} (worst {measured['worst_px']:.4f} px)"
            )
            ax.fill_between(
                phase,
                mean[axis] - error[axis],
                mean[axis] + error[axis],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
    for axis, ax in enumerate(axes):
        ax.axhspan(-0.01, 0.01, color="0.85", zorder=0, label="goal: within 0.01 px" if axis == 0 else None)
        ax.axhline(0, color="0.5", lw=1)
        name = "xy"[axis]
        ax.set(xlabel=f"true {name} phase (px from the pixel centre)", ylabel=f"mean {name} error (px)",
               title=f"Bias by sub-pixel phase, {name} (band: ±1 standard error)", xlim=(-0.5, 0.5))  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
