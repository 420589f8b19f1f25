"""3D figures: precision against the 3D bound, and the bias of z, by depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pixelreg.plots.style import _save  # noqa: E402


def plot_depth_precision(by_depth: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """`bench 3d`: each method's lateral and axial rmse by true depth beside the 3D Cramér-Rao
    bound (and 1.15 times it, the goal), and the mean z error by depth, which should be flat at 0."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    bound_drawn = False
    for name, rows in by_depth.items():
        z = np.array([r["z_nm"] for r in rows])
        for ax, key in zip(axes[:2], ("lateral", "axial"), strict=True):
            ax.plot(z, [r[f"rmse_{key}_nm"] for r in rows], "o-", ms=4, label=name)
            if not bound_drawn:
                bound = np.array([r[f"bound_{key}_nm"] for r in rows], dtype=float)
                ax.plot(z, bound, "k--", lw=1.2, label="3D Cramér-Rao bound")
                ax.fill_between(z, bound, 1.15 * bound, color="0.85", zorder=0, label="within 1.15 x bound")
        bound_drawn = True
        bias, error = np.array([r["bias_z_nm"] for r in rows]), np.array([r["bias_z_error_nm"] for r in rows])
        (line,) = axes[2].plot(z, bias, "o-", ms=4, label=name)
        axes[2].fill_between(z, bias - error, bias + error, color=line.get_color(), alpha=0.15, lw=0)
    for ax, key in zip(axes[:2], ("lateral (x and y together)", "axial (z)"), strict=True):
        ax.set(xlabel="true depth z (nm)", ylabel="rmse (nm)", title=f"{key} rmse, isolated spots")
        ax.set_ylim(bottom=0)
    axes[2].axhline(0, color="0.5", lw=1)
    axes[2].set(
        xlabel="true depth z (nm)", ylabel="mean z error (nm)", title="bias of z (band: ±1 standard error)"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
