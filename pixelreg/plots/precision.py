"""Figures of precision: against noise and the bound, uncertainties, pixel locking, the precision grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from pixelreg.evaluate.matching import MATCH_RADIUS_PX
from pixelreg.evaluate.metrics import phase_bias, phase_bias_error, phase_centres, phase_of, points_by_method
from pixelreg.plots.style import GRID_STYLES, METHOD_STYLES, PHOTON_METHODS, RATIO_TICKS, _save


def _binned_error(predictions: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    cells = np.floor(predictions["true"][:, 0] + 0.5).astype(int)
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    np.add.at(total, (cells[:, 1], cells[:, 0]), predictions["error_px"])
    np.add.at(count, (cells[:, 1], cells[:, 0]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def plot_precision_vs_noise(curve: dict[str, Any], path: Path) -> Path:
    """Localisation precision of model and baselines against the Cramér-Rao bound, by noise."""
    noise = np.array(curve["noise"])
    fig, (ax_rmse, ax_recall) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    ax_rmse.plot(noise, curve["crlb_px"], "k--", lw=2, label="Cramér-Rao lower bound")
    for name, style in METHOD_STYLES.items():
        values = curve["methods"].get(name)
        if values is None:
            continue
        rmse = np.array([np.nan if v is None else v for v in values["rmse_hits_px"]], dtype=float)
        ax_rmse.plot(noise, rmse, "-", ms=6, **style)
        ax_recall.plot(noise, values["recall_1px"], "-", ms=6, **style)
    for ax in (ax_rmse, ax_recall):
        ax.axvline(curve["trained_noise"], color="0.5", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_xticks(noise, [f"{level:g}" for level in noise])
        ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("noise sigma (grey levels)")
    ax_rmse.set_yscale("log")
    ax_rmse.set(ylabel="RMSE of spots found within 1 px (px)", title="Localisation precision")
    ax_rmse.text(0.02, 0.98, "only spots found within 1 px count, so where many are missed\nthe RMSE is censored and may dip below the bound",
                 transform=ax_rmse.transAxes, va="top", fontsize=7, color="0.35")  # fmt: skip
    ax_recall.set(ylabel="share of spots found within 1 px", title="Detection", ylim=(0, 1.02))
    ax_rmse.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_uncertainty(predictions: dict[str, np.ndarray], path: Path, bins: int = 10) -> Path:
    """What each localization is worth: the error against the uncertainty reported with it
    (calibrated: on the diagonal), and the rmse against the Poisson bound by photon decile."""
    fig, (ax_cal, ax_dec) = plt.subplots(1, 2, figsize=(11, 4.4))
    photons = predictions["photometry_true_photons"]
    edges = np.quantile(photons, np.linspace(0, 1, bins + 1))
    decile = np.clip(np.searchsorted(edges, photons, side="right") - 1, 0, bins - 1)
    bound = predictions["photometry_bound_px"]
    centres = [np.median(photons[decile == d]) for d in range(bins)]
    highest = 0.0
    for name, style in PHOTON_METHODS.items():
        if f"photometry_{name}_error" not in predictions:
            continue
        error, unc = predictions[f"photometry_{name}_error"], predictions[f"photometry_{name}_uncertainty"]
        order = np.argsort(unc)
        groups = np.array_split(order, bins)
        reported = [unc[g].mean() for g in groups]
        found = [np.sqrt((error[g] ** 2).mean()) for g in groups]  # per axis
        ax_cal.plot(reported, found, "-", ms=6, **style)
        highest = max(highest, max(reported), max(found))
        ratio = [
            np.sqrt((error[decile == d] ** 2).sum(-1).mean() / (bound[decile == d] ** 2).mean())
            for d in range(bins)
        ]
        ax_dec.plot(centres, ratio, "-", ms=6, **style)
    ax_cal.plot([0, highest], [0, highest], "k--", lw=1, label="calibrated")
    ax_cal.set(xlabel="reported uncertainty, per axis (px)", ylabel="rmse per axis (px)",
               title="Error against reported uncertainty\n(spots in tenths by their uncertainty)")  # fmt: skip
    ax_dec.axhline(1.0, color="k", ls="--", lw=1, label="Poisson bound")
    ax_dec.axhline(1.1, color="0.5", ls=":", lw=1, label="1.1 x the bound")
    ax_dec.set_xscale("log")
    ax_dec.set(xlabel="photons in the spot (decile median)", ylabel="rmse / bound",
               title="Precision by photon decile")  # fmt: skip
    for ax in (ax_cal, ax_dec):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_bias(predictions: dict[str, np.ndarray], path: Path) -> Path:
    """Pixel locking made visible: mean error against the true sub-pixel phase, per axis, for the
    model and each baseline (spots found within 1 px), beside the histogram of the predicted
    positions' phases, which is flat when nothing pulls estimates towards pixel centres."""
    true = predictions["true"]
    centres = np.array(phase_centres())
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for name, pred in points_by_method(predictions).items():
        style = METHOD_STYLES.get(name, {"color": "0.3", "marker": ".", "label": name})
        if name == "model":
            style = {**style, "label": "model"}  # one model, at the noise of its data
        hits = np.linalg.norm(pred - true, axis=-1) <= MATCH_RADIUS_PX
        bias = phase_bias(true[hits], (pred - true)[hits])
        error = phase_bias_error(true[hits], (pred - true)[hits])
        for axis in (0, 1):
            axes[axis].plot(centres, bias[axis], "-", ms=5, **style)
            axes[axis].fill_between(centres, bias[axis] - error[axis], bias[axis] + error[axis],
                                    color=style["color"], alpha=0.12, lw=0)  # fmt: skip
        if name == "argmax":
            continue  # a pixel centre by construction: one spike that would flatten the rest
        phases = phase_of(pred[hits]).ravel()
        axes[2].hist(phases, bins=40, range=(-0.5, 0.5), density=True, histtype="step", lw=1.6,
                     color=style["color"], label=style["label"])  # fmt: skip
    for axis, name in ((0, "x"), (1, "y")):
        ax = axes[axis]
        ax.axhline(0, color="0.5", lw=1)
        ax.set(xlabel=f"true {name} phase (px from the pixel centre)", ylabel=f"mean {name} error (px)",
               title=f"Bias by sub-pixel phase, {name}", xlim=(-0.5, 0.5))  # fmt: skip
        ax.grid(alpha=0.3)
    axes[2].axhline(1.0, color="0.5", lw=1, ls=":")
    axes[2].set(xlabel="phase of predicted positions (px)", ylabel="density (flat = 1: no locking)",
                title="Predicted sub-pixel phases (argmax left out)", xlim=(-0.5, 0.5))  # fmt: skip
    axes[2].legend(fontsize=8, loc="lower center")
    axes[0].set_title("Bias by sub-pixel phase, x (band: ±1 standard error)")
    axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_precision_grid(results: dict[str, Any], path: Path) -> Path:
    """The precision bench: for each blur, rmse over the bound and pixel locking (bias_px)
    against brightness, one line per method, with the goal band of 1 to 1.05 times the bound."""
    rows = results["rows"]
    # where spots are lost, rmse over every spot measures detection; over the spots that every
    # model and the fit found, it measures precision alone
    blurs = sorted({row["blur"] for row in rows})
    ticks = sorted({row["brightness"] for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, axes = plt.subplots(2, len(blurs), figsize=(4.6 * len(blurs), 7.4), squeeze=False, sharey="row")
    for column, blur in enumerate(blurs):
        ax_rmse, ax_bias = axes[0, column], axes[1, column]
        ax_rmse.axhspan(1.0, results["at_bound"], color="#2ca02c", alpha=0.12, lw=0)
        ax_rmse.axhline(1.0, color="k", ls="--", lw=1.2, label="Cramér-Rao bound")
        for method in methods:
            cells = sorted((r["brightness"], r) for r in rows if r["blur"] == blur and r["method"] == method)
            style = GRID_STYLES.get(method, {"color": "0.3", "marker": ".", "label": method})
            brightness = [b for b, _ in cells]
            ratio = [
                np.nan if r["rmse_common_over_crlb"] is None else r["rmse_common_over_crlb"] for _, r in cells
            ]
            bias = [np.nan if r["bias_px"] is None else r["bias_px"] for _, r in cells]
            ax_rmse.plot(brightness, ratio, "-", ms=6, **style)
            ax_bias.plot(brightness, bias, "-", ms=6, **style)
        for ax in (ax_rmse, ax_bias):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
            ax.minorticks_off()
            ax.grid(alpha=0.3, which="both")
        ax_rmse.set_yticks(RATIO_TICKS, [f"{tick:g}" for tick in RATIO_TICKS])
        ax_rmse.set_title(f"blur sigma {blur:g} px")
        ax_bias.set_xlabel("spot brightness (grey levels summed)")
    axes[0, 0].set_ylabel("RMSE / Cramér-Rao bound, over the spots\nevery model and the fit found")
    axes[1, 0].set_ylabel("bias_px: worst mean error over\nsub-pixel phase bins (px)")
    axes[0, 0].set_ylim(0.3, 3.0)  # the region that tells methods near the bound apart
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Patch(color="#2ca02c", alpha=0.12))
    labels.append("within 5% of the bound (above 3: off the chart)")
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    test = results["spec"]["n"] * results["spec"]["test_fraction"]
    fig.suptitle(
        f"pixelreg bench precision: sub-pixel spots, noise 10, background 50; about {test:,.0f} test spots per cell"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)
