"""The figures' shared styles and the atomic PNG writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pixelreg.io.files import write_atomic

TRUE_STYLE = {"marker": "o", "s": 90, "facecolors": "none", "edgecolors": "#2ca02c", "linewidths": 1.8}
PRED_STYLE = {"marker": "x", "s": 60, "c": "#d62728", "linewidths": 1.8}
SEEN_COLOR, UNSEEN_COLOR = "#1f77b4", "#ff7f0e"


def _save(fig: Figure, path: Path) -> Path:
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


METHOD_STYLES = {
    "model": {"color": "#d62728", "marker": "o", "label": "model (trained at the marked noise)"},
    "gaussian_fit": {"color": "#1f77b4", "marker": "s", "label": "Gaussian fit (least squares)"},
    "centroid": {"color": "#2ca02c", "marker": "^", "label": "centroid"},
    "argmax": {"color": "#7f7f7f", "marker": "v", "label": "argmax"},
}


PHOTON_METHODS = {
    "model": {"color": "#d62728", "marker": "o", "label": "model"},
    "poisson_mle": {"color": "#1f77b4", "marker": "s", "label": "Poisson ML fit"},
}


GRID_STYLES = {
    "offsets": {"color": "#d62728", "marker": "o", "label": "offsets model"},
    "heatmap": {"color": "#9467bd", "marker": "D", "label": "heatmap model"},
    "cnn": {"color": "#8c564b", "marker": "P", "label": "cnn model"},
    "coordconv": {"color": "#e377c2", "marker": "X", "label": "coordconv model"},
    **{name: style for name, style in METHOD_STYLES.items() if name != "model"},
}


RATIO_TICKS = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)


DETECTION_MARKS = {
    "tp": {"marker": "o", "s": 80, "facecolors": "none", "edgecolors": "#2ca02c", "linewidths": 1.5},
    "pred": {"marker": "+", "s": 40, "c": "#2ca02c", "linewidths": 1.2},
    "fp": {"marker": "x", "s": 60, "c": "#ff1493", "linewidths": 1.8},
    "fn": {"marker": "s", "s": 90, "facecolors": "none", "edgecolors": "#ffa500", "linewidths": 1.8},
}


TRACKPY_STYLE = {"color": "#17becf", "marker": "D", "label": "trackpy.locate"}


def figure_write(fig: Figure) -> Callable[[Path], None]:
    """A writer of `fig` as PNG to a given (temporary) path, for `write_together`: the figure is
    closed once written."""

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
        plt.close(fig)

    return write
