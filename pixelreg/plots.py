"""Figures of a run: one function per figure, headless (Agg), each written atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from .files import write_atomic  # noqa: E402
from .metrics import (  # noqa: E402
    MATCH_RADIUS_PX,
    pair_greedy,
    pairs_of,
    phase_bias,
    phase_bias_error,
    phase_centres,
    phase_of,
    points_by_method,
)
from .runs import RunDir, read_history  # noqa: E402

TRUE_STYLE = {"marker": "o", "s": 90, "facecolors": "none", "edgecolors": "#2ca02c", "linewidths": 1.8}
PRED_STYLE = {"marker": "x", "s": 60, "c": "#d62728", "linewidths": 1.8}
SEEN_COLOR, UNSEEN_COLOR = "#1f77b4", "#ff7f0e"


def _save(fig: Figure, path: Path) -> Path:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_loss(history: dict[str, np.ndarray], path: Path) -> Path:
    """Train and validation loss per epoch (log scale), beside the validation pixel error."""
    fig, (ax_loss, ax_px) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = np.asarray(history["epoch"])
    ax_loss.plot(epochs, history["train_loss"], "-o", ms=3, label="train")
    ax_loss.plot(epochs, history["val_loss"], "-o", ms=3, label="validation")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    error = np.asarray(history["val_mean_px"])
    positive = error > 0  # an exact epoch (0 px) has no place on a log axis: say so instead
    ax_px.plot(epochs[positive], error[positive], "-o", ms=3, color="#9467bd")
    ax_px.set_yscale("log")
    title = "Validation error (pixels)"
    if not positive.all():
        title += f"\n0 px (exact) at {int((~positive).sum())} epoch(s), not drawn"
    ax_px.set(xlabel="epoch", ylabel="mean error (px)", title=title)
    for ax in (ax_loss, ax_px):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)


def plot_scatter(predictions: dict[str, np.ndarray], size: tuple[int, int], path: Path) -> Path:
    """Predicted against true x and y, seen and unseen positions told apart, with the diagonal."""
    true, pred, seen = predictions["true"], predictions["pred"], predictions["seen"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for axis, (ax, name, extent) in enumerate(zip(axes, ("x", "y"), (size[1], size[0]), strict=True)):
        ax.plot(
            [-0.5, extent - 0.5],
            [-0.5, extent - 0.5],
            color="0.6",
            lw=1,
            zorder=0,
            label="prediction = truth",
        )
        for mask, color, label in (
            (seen, SEEN_COLOR, "seen in training"),
            (~seen, UNSEEN_COLOR, "never seen"),
        ):
            if mask.any():
                ax.scatter(
                    true[mask, :, axis].ravel(),
                    pred[mask, :, axis].ravel(),
                    s=6,
                    alpha=0.6,
                    color=color,
                    label=f"{label} ({int(mask.sum())})",
                )
        ax.set(
            xlabel=f"true {name} (px)", ylabel=f"predicted {name} (px)", title=f"{name}: predicted vs true"
        )
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_samples(predictions: dict[str, np.ndarray], path: Path, count: int = 12, crop: int = 8) -> Path:
    """A grid of evaluated images zoomed around the true point, true and predicted points marked.

    Half are drawn at random, half are the worst errors, so that failures are never hidden.
    """
    images, true, pred, errors = (predictions[key] for key in ("images", "true", "pred", "error_px"))
    rng = np.random.default_rng(0)
    worst = np.argsort(errors)[::-1][: count // 2]
    rest = np.setdiff1d(np.arange(len(images)), worst)
    chosen = np.concatenate([rng.choice(rest, size=min(count - len(worst), rest.size), replace=False), worst])
    cols = 4
    rows = max(1, int(np.ceil(len(chosen) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.1 * rows), squeeze=False)
    height, width = images.shape[1:]
    for ax, i in zip(axes.ravel(), chosen, strict=False):
        cx, cy = true[i, 0]
        x0 = int(np.clip(round(cx) - crop, 0, max(0, width - 2 * crop - 1)))
        y0 = int(np.clip(round(cy) - crop, 0, max(0, height - 2 * crop - 1)))
        x1, y1 = min(width, x0 + 2 * crop + 1), min(height, y0 + 2 * crop + 1)
        ax.imshow(
            images[i, y0:y1, x0:x1],
            cmap="gray",  # each crop stretched to its own range, so faint spots show
            interpolation="nearest",
            extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5),
        )
        ax.scatter(true[i, :, 0], true[i, :, 1], **TRUE_STYLE)
        ax.scatter(pred[i, :, 0], pred[i, :, 1], **PRED_STYLE)
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(y1 - 0.5, y0 - 0.5)
        outside = [
            f"({x:.1f}, {y:.1f})"
            for x, y in pred[i]
            if not (x0 - 0.5 <= x <= x1 - 0.5 and y0 - 0.5 <= y <= y1 - 0.5)
        ]
        if outside:
            ax.text(0.02, 0.02, "predicted outside view: " + ", ".join(outside), transform=ax.transAxes,
                    fontsize=7, color="white", backgroundcolor="#d62728")  # fmt: skip
        tag = "worst" if i in worst else "random"
        ax.set_title(f"#{predictions['index'][i]} ({tag}): error {errors[i]:.3f} px", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(chosen) :]:
        ax.axis("off")
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            mfc="none",
            mec=TRUE_STYLE["edgecolors"],
            mew=1.8,
            ms=9,
            label="true point",
        ),
        Line2D([], [], marker="x", ls="", color=PRED_STYLE["c"], mew=1.8, ms=8, label="predicted point"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=2, bbox_to_anchor=(0.5, 1.02))
    fig.suptitle(
        f"Images zoomed to {2 * crop + 1}x{2 * crop + 1} px around the true point (axes in image pixels)",
        y=1.05,
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_error_map(predictions: dict[str, np.ndarray], path: Path) -> Path:
    """Mean error at each pixel position; positions never seen in training outlined."""
    train_mask = predictions["train_mask"].astype(bool)
    height, width = train_mask.shape
    if "position_error" in predictions:
        error = predictions["position_error"]
        source = "one image at every position"
    else:
        error = _binned_error(predictions, height, width)
        source = "evaluated images, binned by true pixel (blank: no image)"
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    finite = error[np.isfinite(error)]
    # a few gross misses would turn the rest black: cap the colours at the 99th percentile
    vmax = max(float(np.percentile(finite, 99)) if finite.size else 0.0, 1e-3)
    above = int((finite > vmax).sum())
    shown = ax.imshow(error, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    label = "mean error (px)" + (f"; {above} above the scale" if above else "")
    fig.colorbar(shown, ax=ax, label=label, shrink=0.85, extend="max" if above else "neither")
    unseen_y, unseen_x = np.nonzero(~train_mask)
    marker_size = (fig.get_size_inches()[0] * 72 * 0.7 / width) ** 2 * 0.55
    ax.scatter(
        unseen_x, unseen_y, marker="s", s=marker_size, facecolors="none", edgecolors="#4fc3f7", linewidths=0.6
    )
    ax.set(xlabel="x (column)", ylabel="y (row)")
    exact_note = f"max {finite.max():.3f} px" if finite.size else "no data"
    ax.set_title(
        f"Error by position ({source})\n{exact_note}; outlined: never seen in training ({unseen_x.size})",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)


def _binned_error(predictions: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    cells = np.floor(predictions["true"][:, 0] + 0.5).astype(int)
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    np.add.at(total, (cells[:, 1], cells[:, 0]), predictions["error_px"])
    np.add.at(count, (cells[:, 1], cells[:, 0]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


METHOD_STYLES = {
    "model": {"color": "#d62728", "marker": "o", "label": "model (trained at the marked noise)"},
    "gaussian_fit": {"color": "#1f77b4", "marker": "s", "label": "Gaussian fit (least squares)"},
    "centroid": {"color": "#2ca02c", "marker": "^", "label": "centroid"},
    "argmax": {"color": "#7f7f7f", "marker": "v", "label": "argmax"},
}


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


PHOTON_METHODS = {
    "model": {"color": "#d62728", "marker": "o", "label": "model"},
    "poisson_mle": {"color": "#1f77b4", "marker": "s", "label": "Poisson ML fit"},
}


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


GRID_STYLES = {
    "offsets": {"color": "#d62728", "marker": "o", "label": "offsets model"},
    "heatmap": {"color": "#9467bd", "marker": "D", "label": "heatmap model"},
    "cnn": {"color": "#8c564b", "marker": "P", "label": "cnn model"},
    "coordconv": {"color": "#e377c2", "marker": "X", "label": "coordconv model"},
    **{name: style for name, style in METHOD_STYLES.items() if name != "model"},
}


RATIO_TICKS = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)


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
        f"pixelreg bench --precision: sub-pixel spots, noise 10, background 50; about {test:,.0f} test spots per cell"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


DETECTION_MARKS = {
    "tp": {"marker": "o", "s": 80, "facecolors": "none", "edgecolors": "#2ca02c", "linewidths": 1.5},
    "pred": {"marker": "+", "s": 40, "c": "#2ca02c", "linewidths": 1.2},
    "fp": {"marker": "x", "s": 60, "c": "#ff1493", "linewidths": 1.8},
    "fn": {"marker": "s", "s": 90, "facecolors": "none", "edgecolors": "#ffa500", "linewidths": 1.8},
}


def plot_detections(predictions: dict[str, np.ndarray], tolerance: float, path: Path, count: int = 8) -> Path:
    """Whole evaluated images with every detection judged: true positives (truth circled, its
    prediction a cross inside), false positives and missed spots, each in its own mark.

    Half are drawn at random, half are the images with the most mistakes, so that failures show.
    """
    images, true, pred = predictions["images"], predictions["true"], predictions["pred"]
    paired = pair_greedy(pred, true, tolerance)
    tp = (paired >= 0).sum(1)
    mistakes = np.isfinite(true[..., 0]).sum(1) + np.isfinite(pred[..., 0]).sum(1) - 2 * tp
    worst = np.argsort(-mistakes, kind="stable")[: count // 2]
    worst = worst[mistakes[worst] > 0]
    rest = np.setdiff1d(np.arange(len(images)), worst)
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(rest, size=min(count - len(worst), rest.size), replace=False), worst])
    cols = 4
    rows = max(1, int(np.ceil(len(chosen) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.8 * rows), squeeze=False)
    for ax, i in zip(axes.ravel(), chosen, strict=False):
        ax.imshow(images[i], cmap="gray", interpolation="nearest")
        used = np.zeros(pred.shape[1], dtype=bool)
        used[paired[i][paired[i] >= 0]] = True
        found = paired[i] >= 0
        present_true = np.isfinite(true[i, :, 0])
        present_pred = np.isfinite(pred[i, :, 0])
        ax.scatter(true[i, found, 0], true[i, found, 1], **DETECTION_MARKS["tp"])
        ax.scatter(pred[i, used, 0], pred[i, used, 1], **DETECTION_MARKS["pred"])
        ax.scatter(
            pred[i, present_pred & ~used, 0], pred[i, present_pred & ~used, 1], **DETECTION_MARKS["fp"]
        )
        missed = present_true & ~found
        ax.scatter(true[i, missed, 0], true[i, missed, 1], **DETECTION_MARKS["fn"])
        tag = "most mistakes" if i in worst else "random"
        ax.set_title(
            f"#{predictions['index'][i]} ({tag}): {int(present_true.sum())} spots\n"
            f"TP {int(found.sum())}, FP {int((present_pred & ~used).sum())}, missed {int(missed.sum())}",
            fontsize=9,
        )
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(chosen) :]:
        ax.axis("off")
    handles = [
        Line2D(
            [], [], marker="o", ls="", mfc="none", mec="#2ca02c", mew=1.5, ms=9, label="true positive (truth)"
        ),
        Line2D([], [], marker="+", ls="", color="#2ca02c", mew=1.2, ms=7, label="its prediction"),
        Line2D([], [], marker="x", ls="", color="#ff1493", mew=1.8, ms=8, label="false positive"),
        Line2D([], [], marker="s", ls="", mfc="none", mec="#ffa500", mew=1.8, ms=9, label="missed spot"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.03))
    fig.suptitle(f"Detections paired with truths within {tolerance:g} px", y=1.06, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_precision_recall(report: dict[str, Any], path: Path) -> Path:
    """Precision against recall over each method's thresholds, the chosen threshold starred,
    beside the Jaccard index over the model's confidence threshold."""
    curves, chosen = report["detection_curves"], report["thresholds"]
    fig, (ax_pr, ax_ji) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for name, curve in curves.items():
        style = (
            TRACKPY_STYLE if name == "trackpy" else METHOD_STYLES.get(name, {"color": "0.3", "label": name})
        )
        label = "model" if name == "model" else style["label"]
        recall = np.array([np.nan if v is None else v for v in curve["recall"]], dtype=float)
        precision = np.array([np.nan if v is None else v for v in curve["precision"]], dtype=float)
        ax_pr.plot(recall, precision, "-", color=style["color"], lw=1.6, label=label)
        at = int(np.argmin(np.abs(np.array(curve["threshold"]) - chosen[name])))
        ax_pr.scatter(
            recall[at], precision[at], marker="*", s=150, color=style["color"], edgecolors="k", zorder=3
        )
        if name == "model":
            jaccard = np.array([np.nan if v is None else v for v in curve["jaccard"]], dtype=float)
            ax_ji.plot(curve["threshold"], jaccard, "-o", ms=3, color=style["color"])
            ax_ji.axvline(chosen[name], color="0.5", ls=":", lw=1)
    at_chosen = [
        curve[key][int(np.argmin(np.abs(np.array(curve["threshold"]) - chosen[name])))]
        for name, curve in curves.items()
        for key in ("recall", "precision")
    ]
    low = min((v for v in at_chosen if v is not None), default=0.0) - 0.08  # zoomed on the stars
    ax_pr.set(
        xlabel="recall", ylabel="precision", title="Precision against recall over thresholds (star: chosen)"
    )
    ax_pr.set_xlim(max(0.0, low - 0.02), 1.005)
    ax_pr.set_ylim(max(0.0, low - 0.02), 1.005)
    ax_pr.legend(fontsize=8, loc="lower left")
    ax_ji.set(
        xlabel="model's confidence threshold", ylabel="Jaccard index", title="Jaccard index of the model"
    )
    for ax in (ax_pr, ax_ji):
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"pairs within {report['tolerance_px']:g} px; split {report['split']!r}. argmax, centroid and Gaussian "
        "fit share their detections (one curve) and differ in rmse only",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)


def paired_view(predictions: dict[str, np.ndarray], tolerance: float) -> dict[str, np.ndarray]:
    """The model's pairs of a counting evaluation, one pair per row, in the form of a fixed-count
    evaluation (true and pred (P, 1, 2), seen, error_px, train_mask), for the figures of errors."""
    true, pred = predictions["true"], predictions["pred"]
    paired = pair_greedy(pred, true, tolerance)
    pair_pred, pair_true = pairs_of(pred, true, paired)
    rows, _ = np.nonzero(paired >= 0)
    return {
        "true": pair_true,
        "pred": pair_pred,
        "seen": predictions["seen"][rows],
        "error_px": np.linalg.norm(pair_pred - pair_true, axis=-1)[:, 0],
        "train_mask": predictions["train_mask"],
    }


TRACKPY_STYLE = {"color": "#17becf", "marker": "D", "label": "trackpy.locate"}


def plot_density(results: dict[str, Any], path: Path) -> Path:
    """The density bench: Jaccard index and efficiency against the mean number of spots per
    image, one line per method."""
    rows = results["rows"]
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, (ax_ji, ax_eff) = plt.subplots(1, 2, figsize=(11, 4.4))
    for method in methods:
        cells = sorted((row["mean_spots"], row) for row in rows if row["method"] == method)
        style = {
            "model": {"color": "#d62728", "marker": "o", "label": "offsets model (counting)"},
            "network": {
                "color": "#ff9896",
                "marker": "o",
                "ls": ":",
                "label": "its network alone (no joint fits)",
            },
            "trackpy": TRACKPY_STYLE,
        }.get(method, METHOD_STYLES.get(method, {"color": "0.3", "marker": ".", "label": method}))
        spots = [m for m, _ in cells]
        jaccard = [np.nan if r["jaccard"] is None else 100 * r["jaccard"] for _, r in cells]
        efficiency = [np.nan if r["efficiency"] is None else r["efficiency"] for _, r in cells]
        line = {"ls": "-", "ms": 6, **style}
        ax_ji.plot(spots, jaccard, **line)
        ax_eff.plot(spots, efficiency, **line)
    ax_ji.set(xlabel="spots per image (mean)", ylabel="Jaccard index (%)", title="Detection: Jaccard index")
    ax_eff.set(
        xlabel="spots per image (mean)",
        ylabel="efficiency (%)",
        title=f"Efficiency (rmse in nm at {results['pixel_size_nm']:g} nm pixels)",
    )
    for ax in (ax_ji, ax_eff):
        ax.grid(alpha=0.3)
    ax_ji.legend(fontsize=8, loc="lower left")
    size = f"{results['spec']['height']}x{results['spec']['width']}"
    conditions = results["conditions"]
    fig.suptitle(
        f"pixelreg bench --density: {size} images, blur {conditions['blur']:g}, brightness "
        f"{conditions['brightness']:g}, noise {conditions['noise']:g}; pairs within {results['tolerance_px']:g} px",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_calibration(calibration: Any, path: Path) -> Path:
    """What `calibrate` fitted: the mean-variance line of the background pixels, the PSF's radial
    profile against the Gaussian of the estimated sigma, and the spots' photons with the range
    the training spec takes."""
    fig, (ax_line, ax_psf, ax_photons) = plt.subplots(1, 3, figsize=(14, 4))
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


def plot_run(
    run_dir: str | Path, device: str = "auto", say: Callable[[str], None] = lambda message: None
) -> list[Path]:
    """Every figure of a run, written to RUN_DIR/figures (evaluating best.pt first if needed)."""
    from .evaluate import evaluate_run_for_plots

    history = read_history(RunDir(run_dir).require_trained().history)  # a bad history fails first
    predictions, curve = evaluate_run_for_plots(run_dir, device, say)
    report = None
    if "confidence" in predictions:  # a counting model: the figures read its scoring and curves
        report = json.loads(RunDir(run_dir).metrics.read_text())
    return draw_figures(run_dir, history, predictions, curve, report)


def draw_figures(
    run_dir: str | Path,
    history: dict[str, list[float]],
    predictions: dict[str, Any],
    curve: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> list[Path]:
    """The figures of a run from its history, its predictions and, if given, its precision curve
    and (for a counting model, whose figures need its scoring) its metrics.json report."""
    run = RunDir(run_dir)
    size = tuple(predictions["train_mask"].shape)
    if report is not None and "detection_curves" in report:
        pairs = paired_view(predictions, report["tolerance_px"])
        return [
            plot_precision_recall(report, run.figures / "precision_recall.png"),
            plot_loss(history, run.figures / "loss.png"),
            plot_scatter(pairs, size, run.figures / "scatter.png"),
            plot_detections(predictions, report["tolerance_px"], run.figures / "samples.png"),
            plot_error_map(pairs, run.figures / "error_map.png"),
        ]
    extra = [plot_precision_vs_noise(curve, run.figures / "precision_vs_noise.png")] if curve else []
    if "photometry_bound_px" in predictions:  # the camera model: what each localization is worth
        extra.append(plot_uncertainty(predictions, run.figures / "uncertainty.png"))
    if np.ptp(phase_of(predictions["true"])) > 0.5:  # sub-pixel truths: the bias has phases to show
        extra.append(plot_bias(predictions, run.figures / "bias.png"))
    return extra + [
        plot_loss(history, run.figures / "loss.png"),
        plot_scatter(predictions, size, run.figures / "scatter.png"),
        plot_samples(predictions, run.figures / "samples.png"),
        plot_error_map(predictions, run.figures / "error_map.png"),
    ]
