"""A run's figures: training curves, predictions against truth, samples and the error map."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from pixelreg.evaluate.metrics import phase_of
from pixelreg.io.runs import RunDir, read_history
from pixelreg.plots.detections import paired_view, plot_detections, plot_precision_recall
from pixelreg.plots.precision import _binned_error, plot_bias, plot_precision_vs_noise, plot_uncertainty
from pixelreg.plots.style import PRED_STYLE, SEEN_COLOR, TRUE_STYLE, UNSEEN_COLOR, _save


def plot_loss(history: dict[str, Any], path: Path) -> Path:
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
        Line2D([], [], marker="x", ls="", color=str(PRED_STYLE["c"]), mew=1.8, ms=8, label="predicted point"),
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


def plot_run(
    run_dir: str | Path, device: str = "auto", say: Callable[[str], None] = lambda message: None
) -> list[Path]:
    """Every figure of a run, written to RUN_DIR/figures (evaluating best.pt first if needed)."""
    from pixelreg.evaluate.report import evaluate_run_for_plots

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
