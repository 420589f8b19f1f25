"""Joint fits of neighbouring detections, with spots dropped or added where the image asks.

A counting network places an isolated spot near the Cramér-Rao bound, but spots whose light
overlaps pull its offsets towards each other, and a close pair may come out as one detection
or as three. Where the training data fixes what a spot looks like (brightness, blur,
background, Gaussian noise: the grey-level model), the image itself can settle it: each group
of detections closer than GROUP_SIGMAS blurs is fitted jointly by least squares, with the
light of every other detection held in place; then the one spot whose absence costs least is
dropped if it explains less than PENALTY of chi-square, and one spot is added at the largest
residual if it explains more. This is the multi-emitter fitting of ThunderSTORM and SMAP,
started from the network's detections instead of from local maxima.

Everything is batched over groups: a group has up to MOST_SPOTS slots, those not in use
inactive (no light, no step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pixelreg.fit.psf import integrated_gaussian, window_pixels
from pixelreg.fit.solver import levenberg_marquardt
from pixelreg.simulate.spec import DataSpec

GROUP_SIGMAS = 3.5  # detections nearer than this many blurs are fitted together
WINDOW_SIGMAS = 4.0  # a group's window reaches this many blurs past its outermost spots
MOST_SPOTS = 6  # larger groups (dense images) keep the network's positions
PENALTY = 25.0  # chi-square a spot must explain to be kept or added (about 5 sigma)
ITERATIONS = 20
CHUNK_PIXELS = 2**21  # groups x slots x window pixels fitted at once, to bound memory
SATURATED = 255  # uint8 grey levels clipped at either end carry no position: left out of fits
BRIGHTNESS_TOLERANCE = (
    0.25  # images whose lone spots are brighter or dimmer than this share keep the network's
)


@dataclass(frozen=True)
class SpotShape:
    """What every spot of a model's training data looks like, in grey levels."""

    brightness: float  # summed over the spot's pixels
    blur: float  # Gaussian sigma, px
    background: float
    noise: float  # standard deviation of the additive Gaussian noise


def spot_shape(spec: DataSpec | None) -> SpotShape | None:
    """The fixed spot of a grey-level spec with blur and noise; None where spots vary or photons
    are counted (the camera model), where these fits do not apply."""
    if spec is None or spec.camera_model or spec.blur <= 0 or spec.blur_max is not None or spec.noise <= 0:
        return None
    return SpotShape(spec.brightness, spec.blur, spec.background, spec.noise)


def refine_detections(
    images: np.ndarray, points: np.ndarray, confidence: np.ndarray, shape: SpotShape
) -> tuple[np.ndarray, np.ndarray]:
    """Detections (N, M, 2), NaN-padded, and their confidence (N, M), refined by joint fits in
    uint8 images (N, H, W). An added spot takes the confidence of the detection nearest to it.
    Returns points (N, M', 2) and confidence (N, M'), padded as given."""
    images = np.asarray(images)
    points = np.asarray(points, dtype=np.float64)
    groups = [group for n in range(len(images)) for group in _groups(points[n], n, shape)]
    like_training = _spots_like_training(images, points, groups, shape)
    groups = [group for group in groups if like_training[group.image]]
    fitted: dict[tuple[int, int], np.ndarray] = {}  # (image, detection) -> refined position
    added: list[tuple[int, np.ndarray, int]] = []  # (image, position, detection it came from)
    dropped: set[tuple[int, int]] = set()
    for batch in _batches(groups, shape):
        _fit_batch(images, points, batch, shape, fitted, added, dropped)
    n_images = len(images)
    rows: list[list[tuple[Any, float]]] = [[] for _ in range(n_images)]
    for n in range(n_images):
        for j in np.flatnonzero(np.isfinite(points[n, :, 0])):
            if (n, j) not in dropped:
                rows[n].append((fitted.get((n, int(j)), points[n, j]), float(confidence[n, j])))
    for n, position, source in added:
        rows[n].append((position, float(confidence[n, source])))
    most = max([len(row) for row in rows] + [1])
    out_points = np.full((n_images, most, 2), np.nan, dtype=np.float32)
    out_confidence = np.zeros((n_images, most), dtype=np.float32)
    for n, row in enumerate(rows):
        row.sort(key=lambda item: -item[1])  # most confident first, as the network's readout
        for m, (position, score) in enumerate(row):
            out_points[n, m], out_confidence[n, m] = position, score
    return out_points, out_confidence


def _spots_like_training(
    images: np.ndarray, points: np.ndarray, groups: list[Any], shape: SpotShape
) -> np.ndarray:
    """(N,) whether each image's lone spots are as bright as the training data's: the median
    least-squares brightness of its lone detections (of all images', where it has fewer than 3) within
    BRIGHTNESS_TOLERANCE of `shape.brightness`. The fits hold brightness fixed; on spots brighter
    or dimmer than that they would add or drop spots, so such images keep the network's."""
    lone = [
        (group.image, points[group.image, group.members[0]]) for group in groups if group.members.size == 1
    ]
    verdict = np.ones(len(images), dtype=bool)
    if not lone:
        return verdict
    image_of = np.array([n for n, _ in lone])
    centres = np.array([p for _, p in lone])
    radius = math.ceil(WINDOW_SIGMAS * shape.blur)
    steps = np.arange(-radius, radius + 1)
    pixel = np.floor(centres + 0.5).astype(np.int64)
    xs, ys = pixel[:, 0, None] + steps, pixel[:, 1, None] + steps  # (L, 2r+1)
    values, usable = _windows(images, image_of, xs, ys)
    g = _light(torch.from_numpy(centres[:, None]), xs, ys, shape).numpy() / shape.brightness * usable
    ratio = (
        (g * (values - shape.background)).sum((1, 2))
        / np.maximum((g * g).sum((1, 2)), 1e-12)
        / shape.brightness
    )
    overall = float(np.median(ratio))
    for n in range(len(images)):
        mine = ratio[image_of == n]
        typical = float(np.median(mine)) if mine.size >= 3 else overall  # a few may be merged pairs
        verdict[n] = abs(typical - 1.0) <= BRIGHTNESS_TOLERANCE
    return verdict


@dataclass
class _Group:
    image: int
    members: np.ndarray  # indices of the image's detections


def _groups(points: np.ndarray, image: int, shape: SpotShape) -> list[_Group]:
    """The image's detections joined wherever two lie nearer than GROUP_SIGMAS blurs (connected
    components); components larger than MOST_SPOTS are left out."""
    present = np.flatnonzero(np.isfinite(points[:, 0]))
    if present.size == 0:
        return []
    near = np.linalg.norm(points[present, None] - points[None, present], axis=-1) < GROUP_SIGMAS * shape.blur
    label = np.full(present.size, -1)
    for start in range(present.size):
        if label[start] >= 0:
            continue
        label[start], frontier = start, [start]
        while frontier:
            reached = np.flatnonzero(near[frontier].any(0) & (label < 0))
            label[reached] = start
            frontier = list(reached)
    groups = [_Group(image, present[label == value]) for value in np.unique(label)]
    return [group for group in groups if group.members.size <= MOST_SPOTS]


def _batches(groups: list[_Group], shape: SpotShape):
    """Groups of one window size together, a bounded number at a time."""
    pad = math.ceil(WINDOW_SIGMAS * shape.blur)
    by_size: dict[int, list[_Group]] = {}
    for group in groups:
        by_size.setdefault(group.members.size, []).append(group)
    for size, members in sorted(by_size.items()):
        # a chain of `size` spots spans at most (size - 1) group distances
        side = 2 * pad + 2 + math.ceil((size - 1) * GROUP_SIGMAS * shape.blur)
        chunk = max(1, CHUNK_PIXELS // ((size + 1) * side * side * (size + 2)))
        for start in range(0, len(members), chunk):
            yield side, members[start : start + chunk]


def _fit_batch(images, points, batch, shape, fitted, added, dropped) -> None:
    """Fit one batch of groups, each in its window of `side` pixels; record in `fitted` each
    detection's new position, in `dropped` the detections dropped, in `added` the spots added."""
    side, groups = batch
    slots = max(group.members.size for group in groups) + 1  # the last: a spot to add
    start, active, origin = _starting_spots(points, groups, slots, side)
    steps = np.arange(side)
    xs, ys = origin[:, 0, None] + steps, origin[:, 1, None] + steps  # (G, side)
    values, usable = _windows(images, np.array([group.image for group in groups]), xs, ys)
    fixed = _fixed_light(points, groups, xs, ys, shape)

    xs_t, ys_t = torch.from_numpy(xs), torch.from_numpy(ys)
    v = torch.from_numpy(values.astype(np.float64))
    mask = torch.from_numpy(usable.astype(np.float64))
    base = torch.from_numpy(fixed)
    start_t, active_t = torch.from_numpy(start), torch.from_numpy(active)
    fit, chi = _fit(v, mask, base, xs_t, ys_t, start_t, active_t, shape)

    # drop, while any group has one: the spot whose absence costs least, where it explains less
    # than PENALTY (a network may see a close pair as three or four)
    for _ in range(slots - 2):
        fit, active_t, chi, dropped_any = _drop_one(v, mask, base, xs_t, ys_t, fit, active_t, chi, shape)
        if not dropped_any:
            break

    fit, active_t = _add_one(v, mask, base, xs, ys, fit, active_t, chi, shape)
    _, height, width = images.shape
    _record_fits(
        groups, start, fit.numpy(), active_t.numpy(), xs, ys, (height, width), fitted, added, dropped
    )


def _starting_spots(
    points: np.ndarray, groups: list[_Group], slots: int, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each group's fit starts: its detections' positions (G, slots, 2), which slots are in
    use (G, slots), and the top-left pixel (column, row) of its window of `side`, centred on them."""
    g = len(groups)
    start = np.zeros((g, slots, 2))
    active = np.zeros((g, slots), dtype=bool)
    origin = np.zeros((g, 2), dtype=np.int64)
    for i, group in enumerate(groups):
        member_points = points[group.image, group.members]
        start[i, : group.members.size] = member_points
        active[i, : group.members.size] = True
        middle = np.floor((member_points.min(0) + member_points.max(0)) / 2 + 0.5).astype(np.int64)
        origin[i] = middle - side // 2
    return start, active, origin


def _fixed_light(
    points: np.ndarray, groups: list[_Group], xs: np.ndarray, ys: np.ndarray, shape: SpotShape
) -> np.ndarray:
    """(G, side, side) what each group's window holds besides its own spots: the background and
    the light of the image's other detections, where they reach it; held in place by the fit."""
    fixed = np.full((len(groups), xs.shape[1], ys.shape[1]), float(shape.background))
    for i, group in enumerate(groups):
        others = np.isfinite(points[group.image, :, 0])
        others[group.members] = False
        near = points[group.image, others]
        reach = WINDOW_SIGMAS * shape.blur
        near = near[
            (near[:, 0] > xs[i, 0] - reach)
            & (near[:, 0] < xs[i, -1] + reach)
            & (near[:, 1] > ys[i, 0] - reach)
            & (near[:, 1] < ys[i, -1] + reach)
        ]
        if len(near):
            fixed[i] += _light(torch.from_numpy(near[None]), xs[i : i + 1], ys[i : i + 1], shape)[0].numpy()
    return fixed


def _add_one(
    v: torch.Tensor,
    mask: torch.Tensor,
    base: torch.Tensor,
    xs: np.ndarray,
    ys: np.ndarray,
    fit: torch.Tensor,
    active: torch.Tensor,
    chi: torch.Tensor,
    shape: SpotShape,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fits (G, S, 2) and slots in use (G, S) with one spot added at the largest residual of
    each group where it explains more than PENALTY; tried only where the residual is more than
    noise would leave, since a network may see a close pair as one. Updates `fit` and `active`."""
    used = mask.sum((1, 2))
    excess = chi - used > PENALTY + 4 * torch.sqrt(2 * used)
    if excess.any():
        side = xs.shape[1]
        xs_t, ys_t = torch.from_numpy(xs), torch.from_numpy(ys)
        idx = excess.nonzero()[:, 0]
        residual = (
            v[idx] - base[idx] - _light(fit[idx], xs[idx.numpy()], ys[idx.numpy()], shape, active[idx])
        ) * mask[idx]
        peak = residual.flatten(1).argmax(1)
        free = (~active[idx]).to(torch.int64).argmax(1)  # the first unused slot
        trial = fit[idx].clone()
        trial_active = active[idx].clone()
        rows = torch.arange(len(idx))
        trial[rows, free, 0] = xs_t[idx, peak % side].double()
        trial[rows, free, 1] = ys_t[idx, peak // side].double()
        trial_active[rows, free] = True
        f2, c2 = _fit(v[idx], mask[idx], base[idx], xs_t[idx], ys_t[idx], trial, trial_active, shape)
        take = chi[idx] - c2 > PENALTY
        fit[idx] = torch.where(take[:, None, None], f2, fit[idx])
        active[idx] = torch.where(take[:, None], trial_active, active[idx])
    return fit, active


def _record_fits(
    groups: list[_Group],
    start: np.ndarray,
    fit: np.ndarray,
    active: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    size: tuple[int, int],
    fitted: dict[tuple[int, int], np.ndarray],
    added: list[tuple[int, np.ndarray, int]],
    dropped: set[tuple[int, int]],
) -> None:
    """Record each group's fit (G, S, 2) in `fitted`, `dropped` and `added` (see _fit_batch); a
    spot outside its window or the height x width image is not trusted and keeps the network's
    position, or is not added. An added spot is credited to the detection it started nearest."""
    height, width = size
    for i, group in enumerate(groups):
        k = group.members.size
        # a spot stays within its window and the image, or the fit is not trusted
        low = np.maximum([xs[i, 0], ys[i, 0]], 0) - 0.5
        high = np.minimum([xs[i, -1], ys[i, -1]], [width - 1, height - 1]) + 0.5
        for s in range(k):
            key = (group.image, int(group.members[s]))
            if not active[i, s]:
                dropped.add(key)
            elif np.all(fit[i, s] >= low) and np.all(fit[i, s] <= high):
                fitted[key] = fit[i, s]
        for s in range(k, active.shape[1]):
            position = fit[i, s]
            if active[i, s] and np.all(position >= low) and np.all(position <= high):
                nearest = np.linalg.norm(start[i, :k] - position, axis=-1).argmin()
                added.append((group.image, position, int(group.members[nearest])))


def _drop_one(v, mask, base, xs, ys, fit, active, chi, shape):
    """Each group of two or more spots without the one whose absence costs least, where that is
    less than PENALTY; and whether any group dropped one."""
    several = active.sum(1) >= 2
    best_chi = torch.full_like(chi, math.inf)
    best_fit, best_active = fit.clone(), active.clone()
    for s in range(active.shape[1]):
        consider = several & active[:, s]
        if not consider.any():
            continue
        idx = consider.nonzero()[:, 0]
        trial_active = active[idx].clone()
        trial_active[:, s] = False
        f2, c2 = _fit(v[idx], mask[idx], base[idx], xs[idx], ys[idx], fit[idx], trial_active, shape)
        better = c2 < best_chi[idx]
        best_chi[idx] = torch.where(better, c2, best_chi[idx])
        best_fit[idx] = torch.where(better[:, None, None], f2, best_fit[idx])
        best_active[idx] = torch.where(better[:, None], trial_active, best_active[idx])
    drop = several & (best_chi - chi < PENALTY)
    fit = torch.where(drop[:, None, None], best_fit, fit)
    active = torch.where(drop[:, None], best_active, active)
    return fit, active, torch.where(drop, best_chi, chi), bool(drop.any())


def _windows(images: np.ndarray, image_of: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Pixel values (W, R, C) of windows at columns xs and rows ys (W, side) of the given images,
    and which of them a fit may use: inside the image and not clipped at either end."""
    height, width = images.shape[1:]
    inside = ((xs >= 0) & (xs < width))[:, None, :] & ((ys >= 0) & (ys < height))[:, :, None]
    values = window_pixels(images, xs[:, None, :], ys[:, :, None], frames=image_of)
    return values, inside & (values > 0) & (values < SATURATED)


def _light(spots, xs, ys, shape, active=None):
    """Grey levels (G, side, side) of the spots (G, S, 2) at pixel columns xs and rows ys (G, side)."""
    xs_t, ys_t = torch.as_tensor(xs, dtype=torch.float64), torch.as_tensor(ys, dtype=torch.float64)
    sx, _, _ = integrated_gaussian(spots[..., 0, None], xs_t[:, None, :], shape.blur)  # (G, S, C)
    sy, _, _ = integrated_gaussian(spots[..., 1, None], ys_t[:, None, :], shape.blur)  # (G, S, R)
    if active is not None:
        sx = sx * active[..., None]
    return shape.brightness * torch.einsum("gsr,gsc->grc", sy, sx)


def _fit(v, mask, base, xs, ys, start, active, shape):
    """Levenberg-Marquardt least squares of the active spots' positions: (G, S, 2) and chi-square (G,)."""
    xs_t, ys_t = xs.double()[:, None, :], ys.double()[:, None, :]
    on = active.double()
    s = start.shape[1]

    def model(p):
        sx, dsx, _ = integrated_gaussian(p[..., 0, None], xs_t, shape.blur)  # (G, S, C)
        sy, dsy, _ = integrated_gaussian(p[..., 1, None], ys_t, shape.blur)  # (G, S, R)
        sx, dsx = sx * on[..., None], dsx * on[..., None]
        mu = base + shape.brightness * torch.einsum("gsr,gsc->grc", sy, sx)
        jx = shape.brightness * sy[..., :, None] * dsx[..., None, :]  # (G, S, R, C)
        jy = shape.brightness * dsy[..., :, None] * sx[..., None, :]
        jac = torch.cat([jx, jy], 1).flatten(2) * mask.flatten(1)[:, None, :]  # (G, 2S, P)
        residual = ((v - mu) * mask).flatten(1)  # (G, P)
        return residual, jac.transpose(1, 2)

    flat, cost = levenberg_marquardt(
        lambda q: model(torch.stack([q[:, :s], q[:, s:]], -1)),
        torch.cat([start[..., 0], start[..., 1]], 1),
        ITERATIONS,
        ridge=1e-6,
        free=torch.cat([on, on], 1),
        tolerance=1e-4,
    )
    p = torch.stack([flat[:, :s], flat[:, s:]], -1)
    return p, cost / shape.noise**2
