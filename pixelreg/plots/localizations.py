"""Super-resolution renderings of localization tables: each spot drawn as a small Gaussian of
unit integral on a grid finer than the camera's, so that structure below the pixel shows.

Coordinates are those of `pixelreg predict`: x is the column, y the row, pixel centres on
integers, camera pixel (0, 0) spans [-0.5, 0.5] in both. Fine pixel (i, j) of a rendering at
`zoom` covers x in [j / zoom - 0.5, (j + 1) / zoom - 0.5] and y likewise with i.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import write_atomic
from pixelreg.io.locs import Localizations
from pixelreg.limits import require_memory

MAX_ZOOM = 50
MAX_PIXELS = 2**28  # 2 GiB of float64: beyond this a rendering is no longer a figure
MOST_SIGMA = 2.0  # px: the widest a localization is drawn
WINDOW_SIGMAS = 4.0  # each Gaussian drawn out to this many sigma; the rest (< 1e-4) renormalised in
CHUNK_ELEMENTS = 1 << 17  # values added at a time: 2 MiB of values and indices, kept in the cache
WEIGHT_BATCH = 1 << 20  # 1-D pixel weights computed at a time, in one erf call (8 MiB for x, for y)
CONTRAST_PERCENTILE = 99.5  # of the nonzero shown pixels: dense clusters saturate, lone spots show
SHOWN_PIXELS = 1400  # the rendering is binned to at most this many pixels a side for the figure


def render_localizations(
    x: np.ndarray,
    y: np.ndarray,
    uncertainty: np.ndarray | None,
    shape: tuple[int, int],
    zoom: int = 10,
    least_sigma: float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """A float64 image of shape (shape[0] * zoom, shape[1] * zoom): each localization a 2-D
    Gaussian of unit integral with sigma its uncertainty (camera px), integrated over the fine
    pixels, so the image sums to the number of localizations drawn, less what falls off the edges.

    Sigma is clamped below at `least_sigma` (camera px; None: one fine pixel, 1 / zoom), since a
    narrower spot would not be resolved by the grid anyway. A NaN uncertainty, or none given, is
    drawn at that least sigma: an unknown precision is not invented, the spot is drawn as sharp
    as the grid allows (a plain histogram of positions, lightly smoothed). Positions that are NaN
    or outside the frame are skipped. Each Gaussian is drawn only within +-4 sigma, in batches,
    so time grows with the number of spots times (sigma * zoom)^2 and memory stays bounded.
    With `weights`, each localization's Gaussian is scaled by its weight (its depth, say: the
    weighted rendering over the plain one is the mean depth in each fine pixel).
    """
    height, width = _frame_shape(shape)
    zoom = check_rendering(shape, zoom)
    fine_h, fine_w = height * zoom, width * zoom
    floor = 1.0 / zoom if least_sigma is None else float(least_sigma)
    if not (math.isfinite(floor) and floor > 0):
        raise PixelregError(f"least sigma must be a positive number of pixels, not {least_sigma!r}")

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if uncertainty is None:
        sigma = np.full(x.shape, np.nan)
    else:
        sigma = np.asarray(uncertainty, dtype=np.float64).ravel()
    # a localization known no better than MOST_SIGMA px adds nothing a camera pixel does not:
    # drawn at that width, so that one absurd row cannot cost minutes and gigabytes
    sigma = np.minimum(sigma, MOST_SIGMA)
    if not (len(x) == len(y) == len(sigma)):
        raise PixelregError(
            f"x, y and uncertainty must have one value per localization, not {len(x)}, {len(y)} and {len(sigma)}"
        )

    inside = _in_frame(x, y, height, width)
    u, v = (x[inside] + 0.5) * zoom, (y[inside] + 0.5) * zoom  # fine pixel j spans [j, j + 1]
    sigma = sigma[inside]
    weight = np.ones(len(u)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()[inside]
    sigma = np.where(np.isfinite(sigma), np.maximum(sigma, floor), floor) * zoom  # fine pixels
    radius = np.ceil(WINDOW_SIGMAS * sigma).astype(np.int64)

    image = np.zeros(fine_h * fine_w)
    order = np.lexsort((v, radius))  # by window size, then by row: each batch adds to a band of rows
    bounds = np.flatnonzero(np.diff(radius[order])) + 1
    for group in np.split(order, bounds):  # one window size per group
        if len(group) == 0:
            continue
        r = int(radius[group[0]])
        width_r = 2 * r + 1
        per_batch = max(1, WEIGHT_BATCH // (width_r + 1))  # one erf call each: few, large calls
        per_chunk = max(1, CHUNK_ELEMENTS // width_r**2)  # outer products small enough for the cache
        for first in range(0, len(group), per_batch):
            batch = group[first : first + per_batch]
            ix, wx = _weights_1d(u[batch], sigma[batch], r, fine_w)
            iy, wy = _weights_1d(v[batch], sigma[batch], r, fine_h)
            for start in range(0, len(batch), per_chunk):
                part = slice(start, start + per_chunk)
                index = iy[part, :, None] * fine_w + ix[part, None, :]
                share = wy[part, :, None] * wx[part, None, :] * weight[batch][part, None, None]
                np.add.at(image, index.ravel(), share.ravel())
    return image.reshape(fine_h, fine_w)


def check_rendering(shape: tuple[int, int], zoom: int) -> int:
    """The `zoom` of a rendering of frames of `shape`, checked: a whole number from 1 to MAX_ZOOM
    whose image has at most MAX_PIXELS and fits in the memory here."""
    if not (isinstance(zoom, int | np.integer) and 1 <= zoom <= MAX_ZOOM):
        raise PixelregError(f"zoom must be a whole number from 1 to {MAX_ZOOM}, not {zoom!r}", ("zoom",))
    height, width = _frame_shape(shape)
    fine = height * width * int(zoom) ** 2
    if fine > MAX_PIXELS:
        most = math.isqrt(MAX_PIXELS // (height * width))
        advice = f"use a smaller zoom (at most {most})" if most >= 1 else "the frame itself is too large"
        raise PixelregError(
            f"a {height}x{width} frame at zoom {zoom} would be a {height * zoom}x{width * zoom} image, "
            f"more than {MAX_PIXELS:,} pixels; {advice}",
            ("zoom",),
        )
    require_memory(3 * 8 * fine, f"a {height * zoom}x{width * zoom} rendering", "use a smaller zoom")
    return int(zoom)


def _frame_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) of a camera frame, checked to be two positive whole numbers."""
    try:
        height, width = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise PixelregError(f"frame shape must be (height, width) in pixels, not {shape!r}") from None
    if height < 1 or width < 1:
        raise PixelregError(f"frame shape must be at least 1x1 pixels, not {height}x{width}")
    return height, width


def _in_frame(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which positions are finite and inside the frame, [-0.5, width - 0.5) x [-0.5, height - 0.5)."""
    with np.errstate(invalid="ignore"):
        return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def _weights_1d(
    centre: np.ndarray, sigma: np.ndarray, radius: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each spot, the fine-pixel indices of its window along one axis and the integral of
    its Gaussian over each of them, summing to 1 over the window; pixels beyond the image get
    weight 0 (and a harmless index), so what falls off the edge is lost, as it should be.
    """
    first = np.floor(centre).astype(np.int64) - radius
    index = first[:, None] + np.arange(2 * radius + 1)
    edges = (first[:, None] + np.arange(2 * radius + 2) - centre[:, None]) / (sigma[:, None] * math.sqrt(2.0))
    import torch  # here, so that a table's refusals come before torch is imported

    cdf = torch.special.erf(torch.from_numpy(edges)).numpy()  # numpy has no vectorised erf
    weight = np.diff(cdf, axis=1)
    weight /= weight.sum(axis=1, keepdims=True)  # the tail beyond the window, folded back in
    outside = (index < 0) | (index >= size)
    weight[outside] = 0.0
    return np.clip(index, 0, size - 1, out=index), weight


def plot_localizations(
    locs: Localizations, shape: tuple[int, int], path: Path, zoom: int = 10, title: str = ""
) -> Path:
    """One PNG: the super-resolution rendering of a localization table, beside histograms of
    photons and localization uncertainty with their medians, so a reader sees both the
    structure and the precision it was drawn with. Written atomically; returns `path`.

    Rows without photons or an uncertainty (NaN) are counted in the histograms' notes; a
    row without a position is counted, not drawn.
    """
    height, width = _frame_shape(shape)
    x, y, photons, uncertainty = (locs[name] for name in ("x", "y", "photons", "uncertainty"))
    frames = locs["frame"].astype(np.float64)
    count = len(locs)
    depth = locs["z"]
    three_d = bool(np.isfinite(depth).any())  # a 3D model's table: coloured by depth

    image = render_localizations(x, y, uncertainty, (height, width), zoom=zoom)
    drawn = int(np.count_nonzero(_in_frame(x, y, height, width)))
    shown, factor = _bin_for_display(image)
    del image
    nonzero = shown[shown > 0]
    vmax = float(np.percentile(nonzero, CONTRAST_PERCENTILE)) if nonzero.size else 1.0

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: checks come before matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 11.5 if three_d else 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        3 if three_d else 2, 2, width_ratios=[2.6, 1], height_ratios=[1, 1, 0.8][: 3 if three_d else 2]
    )
    ax_img = fig.add_subplot(grid[:2, 0])
    ax_img.set_facecolor("black")
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    bin_px = factor / zoom
    if three_d:
        _depth_coloured(fig, ax_img, locs, (height, width), zoom, shown, vmax, extent)
    else:
        shown_img = ax_img.imshow(
            shown, cmap="magma", vmin=0, vmax=vmax, extent=extent, interpolation="antialiased"
        )
        colorbar = fig.colorbar(shown_img, ax=ax_img, shrink=0.6, pad=0.01, extend="max")
        colorbar.set_label(
            f"localizations per {bin_px:g} x {bin_px:g} px bin (zoom {zoom}"
            + (f", shown binned by {factor}" if factor > 1 else "")
            + f")\nclipped at the {CONTRAST_PERCENTILE:g}th percentile of nonzero bins"
        )
    ax_img.set(xlabel="x (camera pixels)", ylabel="y (camera pixels)")
    _scale_bar(ax_img, width, height)
    if three_d:
        _side_view(fig.add_subplot(grid[2, 0]), x, depth, width)
        _histogram(fig.add_subplot(grid[2, 1]), depth, "depth z (nm)", "nm", "")

    least = f"drawn at sigma {1 / zoom:g} px"
    _histogram(fig.add_subplot(grid[0, 1]), photons, "photons per localization", "photons", "")
    _histogram(fig.add_subplot(grid[1, 1]), uncertainty, "localization uncertainty (px)", "px", least)

    n_frames = len(np.unique(frames[np.isfinite(frames)]))
    heading = f"{count:,} localizations in {n_frames:,} frame{'s' if n_frames != 1 else ''}"
    if drawn < count:
        heading += f" ({count - drawn:,} without a position in the {height}x{width} frame, not drawn)"
    fig.suptitle(f"{heading}\n{title}" if title else heading)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150))
    return Path(path)


def _depth_coloured(
    fig, ax, locs: Localizations, shape: tuple[int, int], zoom: int, shown, vmax, extent
) -> None:
    """The rendering coloured by the mean depth in each shown pixel (a spectral map), its
    brightness the density of localizations there, as 3D SMLM renderings are drawn."""
    import matplotlib

    finite = np.isfinite(locs["z"])
    x, y, uncertainty, depth = (locs[name][finite] for name in ("x", "y", "uncertainty", "z"))
    weighted = render_localizations(x, y, uncertainty, shape, zoom=zoom, weights=depth)
    plain = render_localizations(x, y, uncertainty, shape, zoom=zoom)
    weighted, _ = _bin_for_display(weighted)
    plain, _ = _bin_for_display(plain)
    low, high = np.percentile(depth, [1, 99]) if depth.size else (0.0, 1.0)
    high = max(high, low + 1.0)
    mean = np.divide(weighted, plain, out=np.full_like(plain, low), where=plain > 1e-9)
    colour = matplotlib.colormaps["turbo"]((mean - low) / (high - low))[..., :3]
    brightness = np.clip(shown / vmax, 0, 1)[..., None]
    ax.imshow(colour * brightness, extent=extent, interpolation="antialiased")
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(low, high), "turbo")
    fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.01).set_label(
        f"mean depth z (nm); brightness: density, clipped at the {CONTRAST_PERCENTILE:g}th percentile"
    )


def _side_view(ax, x: np.ndarray, depth: np.ndarray, width: int) -> None:
    """The xz side view: localizations binned by x (a tenth of a pixel) and depth (10 nm)."""
    finite = np.isfinite(depth) & np.isfinite(x)
    low, high = np.percentile(depth[finite], [0.5, 99.5]) if finite.any() else (0.0, 1.0)
    high = max(high, low + 10.0)
    counts, _, _ = np.histogram2d(
        depth[finite], x[finite], bins=(max(10, int((high - low) / 10)), min(2000, width * 10)),
        range=((low, high), (-0.5, width - 0.5)),
    )  # fmt: skip
    ax.set_facecolor("black")
    top = max(1.0, float(np.percentile(counts[counts > 0], CONTRAST_PERCENTILE))) if counts.any() else 1.0
    ax.imshow(counts, cmap="magma", vmin=0, vmax=top, aspect="auto", origin="lower",
              extent=(-0.5, width - 0.5, low, high), interpolation="antialiased")  # fmt: skip
    ax.set(xlabel="x (camera pixels)", ylabel="z (nm)", title="side view (x, z)")


def _bin_for_display(image: np.ndarray) -> tuple[np.ndarray, int]:
    """`image` summed in square blocks to at most SHOWN_PIXELS a side, and the block size:
    counts are kept, and the contrast is set on the pixels a reader actually sees.
    """
    factor = max(1, math.ceil(max(image.shape) / SHOWN_PIXELS))
    if factor == 1:
        return image, 1
    rows, cols = (-(-n // factor) * factor for n in image.shape)
    padded = np.zeros((rows, cols))
    padded[: image.shape[0], : image.shape[1]] = image
    return padded.reshape(rows // factor, factor, cols // factor, factor).sum(axis=(1, 3)), factor


def _scale_bar(ax, width: int, height: int) -> None:
    """A white bar of a round number of camera pixels, about a fifth of the frame's width."""
    target = width / 5
    length = max(n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if n <= max(target, 1))
    x0 = width - 0.5 - width * 0.04 - length
    y0 = height - 0.5 - height * 0.05
    ax.plot([x0, x0 + length], [y0, y0], color="white", lw=3, solid_capstyle="butt")
    ax.text(x0 + length / 2, y0 - height * 0.015, f"{length} px", color="white", ha="center", va="bottom")


def _histogram(ax, values: np.ndarray, label: str, unit: str, missing: str) -> None:
    """A histogram of the finite values with the median marked, or a note if there are none;
    `missing` says how rows without a value were drawn, if that matters. Photon counts, which
    span decades, get logarithmic bins.
    """
    finite = values[np.isfinite(values)]
    if finite.size:  # the bins span the middle 99.8%: one absurd row does not flatten the rest
        low, high = np.percentile(finite, [0.1, 99.9])
        finite = np.clip(finite, low, high)
    ax.set_xlabel(label)
    if finite.size == 0:
        note = "no photometry in this table" + (f"\nspots {missing} (one fine pixel)" if missing else "")
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[])
        return
    positive = finite[finite > 0]
    span = None  # the bars' range: numpy's own unless every value is one
    if finite.max() - finite.min() <= 1e-9 * max(abs(finite.max()), 1.0):  # one value: one bar
        bins: np.ndarray | int = 1
        half = max(abs(float(finite[0])) * 1e-3, 0.5)
        span = (float(finite[0]) - half, float(finite[0]) + half)
    elif unit == "photons" and positive.size == finite.size and positive.max() > 10 * positive.min():
        bins = np.geomspace(positive.min(), positive.max(), 60)
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())  # labels on every minor tick overlap
    else:
        bins = 60
    heights, _, _ = ax.hist(finite, bins=bins, range=span, color="#4c72b0", alpha=0.85)
    ax.set_ylim(0, 1.3 * heights.max())  # headroom for the note, above the bars
    median = float(np.median(finite))
    ax.axvline(median, color="#d62728", ls="--", lw=1.5)
    shown = f"{median:,.0f}" if 100 <= abs(median) < 1e9 else f"{median:.3g}"
    note = f"median {shown} {unit}\n{finite.size:,} of {values.size:,} rows"
    if finite.size < values.size and missing:
        note += f"\nthe others {missing}"
    ax.text(
        0.97,
        0.95,
        note,
        ha="right",
        va="top",
        transform=ax.transAxes,
        color="#d62728",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 2},
    )
    ax.set_ylabel("localizations")
    ax.grid(alpha=0.3)
