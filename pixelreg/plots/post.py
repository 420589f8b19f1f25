"""Figures of what comes after localization: the drift trace, and the FRC curve beside NeNA."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from pixelreg.io.locs import Localizations  # noqa: E402
from pixelreg.post.drift import Drift  # noqa: E402
from pixelreg.post.motion import Motion, Units  # noqa: E402
from pixelreg.post.resolution import THRESHOLD, Nena, RingCorrelation  # noqa: E402


def drift_figure(drift: Drift, pixel_size: float, truth: np.ndarray | None = None) -> Figure:
    """The drift in x and y (nm) by frame: the per-frame curve, the RCC segments' shifts as
    points, and where known the true drift (dashed), shifted to agree on average."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    frames = np.arange(len(drift.x))
    for ax, values, k, name in zip(axes, (drift.x, drift.y), (0, 1), ("x", "y"), strict=True):
        ax.plot(frames, values * pixel_size, color="#d62728", lw=1.5, label=f"drift ({drift.method})")
        if len(drift.centres):
            ax.plot(
                drift.centres,
                drift.shifts[:, k] * pixel_size,
                "o",
                ms=4,
                color="#1f77b4",
                label=f"segments of {drift.segment:,} frames",
            )
        if truth is not None:
            offset = np.mean(values - truth[:, k])
            ax.plot(frames, (truth[:, k] + offset) * pixel_size, "k--", lw=1, label="true drift")
        ax.set_ylabel(f"{name} drift (nm)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("frame")
    axes[0].set_title("stage drift, taken away from every localization")
    fig.tight_layout()
    return fig


def resolution_figure(frc: RingCorrelation, nena: Nena | None, title: str = "") -> Figure:
    """Left: the FRC curve (each ring and smoothed) with the 1/7 threshold and the resolution;
    right: NeNA's histogram of next-frame distances and its fit."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    ax.plot(frc.frequency, frc.correlation, color="0.75", lw=0.8, label="each ring")
    ax.plot(frc.frequency, frc.smoothed, color="#1f77b4", lw=1.8, label="smoothed")
    ax.axhline(THRESHOLD, color="k", ls="--", lw=1, label="1/7")
    if frc.resolution_nm is not None:
        ax.axvline(
            1 / frc.resolution_nm, color="#d62728", lw=1.2, label=f"resolution {frc.resolution_nm:.1f} nm"
        )
    ax.set(
        xlabel="spatial frequency (1/nm)",
        ylabel="Fourier ring correlation",
        title=f"FRC {title} (halves: blocks of {frc.block:,} frames; bins {frc.bin_nm:.1f} nm)",
    )
    ax.set_ylim(-0.1, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    if nena is None:
        ax.text(
            0.5,
            0.5,
            "NeNA: too few localizations\nwith a neighbour in the next frame",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    else:
        width = nena.centres[1] - nena.centres[0]
        ax.bar(nena.centres, nena.density, width=width, color="0.7", label=f"{nena.pairs:,} distances")
        ax.plot(
            nena.centres, nena.fitted, color="#d62728", lw=1.8, label=f"fit: NeNA {nena.precision_nm:.2f} nm"
        )
        ax.set(
            xlabel="distance to the nearest localization in the next frame (nm)",
            ylabel="density (1/nm)",
            title="NeNA: localization precision",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frc_comparison_figure(curves: dict[str, dict[str, RingCorrelation]]) -> Figure:
    """`bench post`: each experiment's smoothed FRC curves of the raw, the corrected and the truly
    corrected table, with the 1/7 threshold."""
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), squeeze=False)
    colours = {"raw": "0.5", "corrected": "#d62728", "true drift": "k"}
    for ax, (name, frcs) in zip(axes[0], curves.items(), strict=True):
        for label, frc in frcs.items():
            shown = "-" if frc.resolution_nm is None else f"{frc.resolution_nm:.1f} nm"
            style = "--" if label == "true drift" else "-"
            ax.plot(
                frc.frequency, frc.smoothed, style, color=colours[label], lw=1.5, label=f"{label}: {shown}"
            )
        ax.axhline(THRESHOLD, color="0.3", ls=":", lw=1, label="1/7")
        ax.set(xlabel="spatial frequency (1/nm)", ylabel="FRC (smoothed)", title=f"FRC, {name}")
        ax.set_xlim(0, 0.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def before_after_figure(
    tables: tuple[Localizations, Localizations], region: tuple[float, float, float, float], zoom: int = 20
) -> Figure:
    """`bench post`: a region (x0, x1, y0, y1 px) of the rendering before and after drift
    correction, each localization a Gaussian of its uncertainty."""
    from pixelreg.plots.localizations import render_localizations

    x0, x1, y0, y1 = region
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4))
    for ax, table, title in zip(axes, tables, ("raw (drifting)", "after drift"), strict=True):
        inside = (table["x"] >= x0) & (table["x"] < x1) & (table["y"] >= y0) & (table["y"] < y1)
        image = render_localizations(
            table["x"][inside] - x0, table["y"][inside] - y0, table["uncertainty"][inside],
            (int(y1 - y0), int(x1 - x0)), zoom,
        )  # fmt: skip
        ax.imshow(image, cmap="magma", vmax=np.percentile(image[image > 0], 99.5),
                  extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))  # fmt: skip
        ax.set(
            title=f"{title}: {int(inside.sum()):,} localizations",
            xlabel="x (camera px)",
            ylabel="y (camera px)",
        )
    fig.tight_layout()
    return fig


def tracks_figure(
    table: Localizations, moved: Motion, units: Units, background: np.ndarray | None = None
) -> Figure:
    """Left: every track drawn (on the movie's first frame where given); middle: each track's
    MSD and the ensemble's by lag; right: the histogram of the tracks' D, in `units`."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    if background is not None:
        ax.imshow(background, cmap="gray")
    order = np.lexsort((table["frame"], table["track"]))
    track, x, y = table["track"][order], table["x"][order], table["y"][order]
    starts = np.flatnonzero(np.diff(track, prepend=-1))
    colours = plt.get_cmap("tab20")
    for k, (a, b) in enumerate(zip(starts, [*starts[1:], len(track)], strict=True)):
        ax.plot(x[a:b], y[a:b], lw=0.8, color=colours(k % 20))
    if background is None:
        ax.invert_yaxis()
        ax.set_aspect("equal")
    ax.set(title=f"{len(starts):,} tracks", xlabel="x (px)", ylabel="y (px)")
    ax = axes[1]
    for row in moved.track_msd[moved.count >= 20][:200]:
        ax.plot(moved.lags, row * units.area, color="0.75", lw=0.5)
    ax.plot(moved.lags, moved.msd * units.area, "o-", color="#d62728", ms=3, label="all tracks")
    ax.set(xscale="log", yscale="log", xlabel="lag (frames)", ylabel=f"MSD ({units.area_name})",
           title=f"MSD; ensemble D = {moved.ensemble_diffusion * units.diffusion:.4g} {units.diffusion_name}")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax = axes[2]
    fitted = moved.diffusion[np.isfinite(moved.diffusion) & (moved.diffusion > 0)] * units.diffusion
    if len(fitted):
        ax.hist(fitted, bins=np.geomspace(fitted.min(), fitted.max(), 30), color="0.5")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap
    ax.set(
        xlabel=f"D of a track ({units.diffusion_name})",
        ylabel="tracks",
        title=f"D of {len(fitted):,} tracks (4 lags fitted)",
    )
    fig.tight_layout()
    return fig
