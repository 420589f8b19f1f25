"""Figures of detection: detections on images, precision-recall, and the density bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from pixelreg.evaluate.matching import pair_greedy, pairs_of
from pixelreg.plots.style import DETECTION_MARKS, METHOD_STYLES, TRACKPY_STYLE, _save


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
        f"pixelreg bench density: {size} images, blur {conditions['blur']:g}, brightness "
        f"{conditions['brightness']:g}, noise {conditions['noise']:g}; pairs within {results['tolerance_px']:g} px",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)
