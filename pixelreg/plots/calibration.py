"""The figure of `calibrate`: what was fitted to a movie's frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from pixelreg.plots.style import _save


def plot_calibration(calibration: Any, path: Path) -> Path:
    """What `calibrate` fitted: the mean-variance line of the background pixels, the PSF's radial
    profile against the Gaussian of the estimated sigma, and the spots' photons with the range
    the training spec takes; below, the simulated twin: a frame of the movie beside one of the
    twin at the same contrast, and both ones' background pixels and spot peaks."""
    twin = calibration.twin
    rows = 2 if twin is not None else 1
    fig, axes = plt.subplots(rows, 3, figsize=(14, 4 * rows), squeeze=False)
    ax_line, ax_psf, ax_photons = axes[0]
    if twin is not None:
        _plot_twin(twin, *axes[1])
    levels, (slope, intercept) = calibration.levels, calibration.line
    estimates = calibration.estimates
    ax_line.plot(levels[:, 0], levels[:, 1], "o", ms=4, label="background pixels (24 bins)")
    span = np.linspace(levels[:, 0].min(), levels[:, 0].max(), 50)
    ax_line.plot(span, slope * span + intercept, "-", lw=1, label=f"line: slope {slope:.3g} ADU")
    ax_line.set(xlabel="mean (ADU)", ylabel="variance (ADU$^2$)", title="Camera: mean-variance")
    gain = estimates["e_per_adu"]
    ax_line.text(
        0.03,
        0.97,
        f"baseline {estimates['baseline'].value:.1f} ADU\ne-per-adu {gain.value:.3g} ({gain.how})",
        transform=ax_line.transAxes,
        va="top",
        fontsize=9,
    )
    ax_line.legend(loc="lower right", fontsize=8)
    sigma = estimates["blur"].value
    if len(calibration.profile):
        r, share = calibration.profile[:, 0], calibration.profile[:, 1]
        ax_psf.plot(r, share, "o", ms=4, label="spots (share of their photons per pixel)")
    curve = np.linspace(0, 7, 200)
    pixel_wide = sigma**2 + 1 / 12  # what a pixel's width adds to the light it averages
    gaussian = np.exp(-(curve**2) / (2 * pixel_wide)) / (2 * np.pi * pixel_wide)
    ax_psf.plot(curve, gaussian, "-", lw=1, label=f"Gaussian, sigma {sigma:.3f} px, over pixels")
    psf = getattr(calibration, "psf", None)
    if psf is not None:  # the PSF measured and trained on, at the middle of the depths drawn
        z = sum(calibration.z_range) / 2 if psf.planes > 1 else None
        samples = psf.pixel_samples(z)
        steps = np.arange(-psf.radius, psf.radius + 1)
        distance = np.hypot(steps[None, :], steps[:, None])
        near = distance <= 7
        ax_psf.plot(distance[near], samples[near], "x", ms=4, color="tab:red",
                    label=f"measured PSF ({psf.source}), a centred spot's pixels")  # fmt: skip
    ax_psf.set(xlabel="distance from the spot's centre (px)", ylabel="share per pixel", title="PSF profile")
    ax_psf.legend(fontsize=8)
    photons = calibration.photons
    if len(photons):
        bins = np.geomspace(max(1.0, photons.min()), photons.max() * 1.01, 40)
        ax_photons.hist(photons, bins=bins, color="tab:blue", alpha=0.8)
        ax_photons.set_xscale("log")
        ax_photons.xaxis.set_minor_formatter(NullFormatter())
    low, high = estimates["photons"].value, estimates["photons_max"].value
    ax_photons.axvspan(low, high, color="tab:green", alpha=0.12, label=f"training: {low:.0f} to {high:.0f}")
    ax_photons.set(
        xlabel="photons per spot", ylabel="spots", title=f"Photons ({len(photons):,} spots fitted)"
    )
    ax_photons.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plot_twin(twin: Any, ax_frames: Any, ax_background: Any, ax_peaks: Any) -> None:
    """The movie's first frame and the twin's side by side at one contrast, and the histograms
    of both ones' background pixels and spot peak heights."""
    movie, simulated = twin.movie[0].astype(float), twin.frames[0].astype(float)
    low, high = np.percentile(np.concatenate([movie.ravel(), simulated.ravel()]), [1, 99.7])
    ax_frames.imshow(
        np.hstack([movie, np.full((movie.shape[0], 2), high), simulated]), cmap="gray", vmin=low, vmax=high
    )
    ax_frames.set(
        xticks=[], yticks=[], title=f"movie (left) and its twin (right), {low:.0f} to {high:.0f} ADU"
    )
    verdict = (
        "agree" if twin.agrees else "DISAGREE: " + ", ".join(s.name for s in twin.statistics if not s.agrees)
    )
    ax_frames.set_xlabel(f"the statistics {verdict}", fontsize=9, color="black" if twin.agrees else "tab:red")
    for ax, (ours, theirs), label, title in (
        (ax_background, twin.background, "background pixel (ADU)", "Background pixels"),
        (ax_peaks, twin.peaks, "spot peak above background (ADU)", "Spot peaks"),
    ):
        both = np.concatenate([ours, theirs])
        if both.size == 0:
            ax.text(0.5, 0.5, "none found", ha="center", va="center", transform=ax.transAxes)
            continue
        low, high = (float(v) for v in np.percentile(both, [0.5, 99.5]))
        bins: Any = np.linspace(low, high, 50) if high > low else 10
        if high - low < 100:  # whole ADU: a bin each, so that none holds two values and its neighbour none
            bins = np.arange(np.floor(low) - 0.5, np.ceil(high) + 1.5)
        ax.hist(ours, bins=bins, density=True, alpha=0.5, color="tab:blue", label=f"movie ({ours.size:,})")
        ax.hist(
            theirs,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.5,
            color="tab:orange",
            label=f"twin ({theirs.size:,})",
        )
        ax.set(xlabel=label, ylabel="share", title=f"{title}: movie and twin")
        ax.legend(fontsize=8)
