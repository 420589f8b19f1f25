"""Join the localizations of one molecule in consecutive frames (one blinking event) into one.

A molecule that shines for several frames is localized once in each; counted as one event it
is one row, at the inverse-variance weighted mean of its positions, whose uncertainty is the
combined one, 1/sqrt(sum of 1/uncertainty^2). Events are grown frame by frame: a localization
joins the nearest event still open (seen within the last `gap` + 1 frames) whose weighted mean
lies near enough, each event taking at most one localization a frame, nearest first. Near
enough is, by default, within four times the combined uncertainty of the localization and of
the event's mean: a fixed radius of a few median uncertainties would split the events of dim
frames and, keeping only the localizations near the first, bias the merged position toward it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations

SIGMAS = 4.0  # by default, a localization joins an event within this many combined uncertainties...
MOST_RADIUS = 10.0  # ...and within this many median uncertainties
DEFAULT_GAP = 1  # dark frames an event may skip: a frame the localizer missed


@dataclass(frozen=True)
class Merged:
    """The merged table (one row per event), for each input row the event it joined, and the
    radius (px): the fixed one, or the most the uncertainties allowed."""

    table: Localizations
    event: np.ndarray
    radius: float
    fixed: bool


def median_uncertainty(table: Localizations) -> float:
    """The table's median uncertainty (px), where it gives one."""
    uncertainty = table["uncertainty"]
    known = uncertainty[np.isfinite(uncertainty) & (uncertainty > 0)]
    if not len(known) or len(known) < len(uncertainty):
        raise PixelregError(
            f"{table.path} does not give every localization an uncertainty to merge by; give --radius"
        )
    return float(np.median(known))


def link_events(
    x: np.ndarray,
    y: np.ndarray,
    frame: np.ndarray,
    weight: np.ndarray,
    radius: float,
    gap: int,
    sigmas: float | None = None,
) -> np.ndarray:
    """The event (0, 1, ...) of each localization: see the module's docstring. `weight` is each
    one's inverse variance, by which an event's position is its members' mean. With `sigmas`,
    a localization joins an event only within `sigmas` times their combined uncertainty (its
    own and that of the event's mean, from the weights), and `radius` is the most that may be."""
    event = np.full(len(x), -1, np.int64)
    order = np.argsort(frame, kind="stable")
    starts = np.flatnonzero(np.diff(frame[order], prepend=-np.inf, append=np.inf))
    sums = np.zeros((len(x), 3))  # per event: sum of weights, of weighted x, of weighted y
    last = np.full(len(x), -(10**12), np.int64)  # per event: the last frame it was seen in
    open_events = np.zeros(0, np.int64)
    count = 0
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        now = order[begin:end]
        f = int(frame[now[0]])
        open_events = open_events[last[open_events] >= f - gap - 1]
        taken = np.zeros(len(now), bool)
        if len(open_events):
            centres = sums[open_events, 1:] / sums[open_events, :1]
            tree = cKDTree(centres)
            pairs = tree.query_ball_point(np.column_stack([x[now], y[now]]), radius)
            candidates = [(i, j) for i, near in enumerate(pairs) for j in near]
            if candidates:
                i, j = np.array(candidates).T
                distance = np.hypot(x[now[i]] - centres[j, 0], y[now[i]] - centres[j, 1])
                if sigmas is not None:
                    combined = np.sqrt(1 / weight[now[i]] + 1 / sums[open_events[j], 0])
                    near = distance <= sigmas * combined
                    i, j, distance = i[near], j[near], distance[near]
                used = set()
                for k in np.argsort(distance, kind="stable"):  # nearest pairs first
                    if taken[i[k]] or j[k] in used:
                        continue
                    taken[i[k]] = True
                    used.add(j[k])
                    event[now[i[k]]] = open_events[j[k]]
        fresh = now[~taken]
        event[fresh] = np.arange(count, count + len(fresh))
        count += len(fresh)
        joined = event[now]
        sums[joined] += np.column_stack([weight[now], weight[now] * x[now], weight[now] * y[now]])
        last[joined] = f
        open_events = np.union1d(open_events, joined)
    return event


def merge_events(table: Localizations, radius: float | None = None, gap: int = DEFAULT_GAP) -> Merged:
    """One row per blinking event of `table` (see the module's docstring): weighted position,
    photons summed, background the mean, confidence the highest, uncertainty combined, `frame`
    the first, `n` the localizations joined, `length` the frames from first to last. A
    localization joins an event within `radius` px of its mean; None: within SIGMAS times their
    combined uncertainty, and MOST_RADIUS median uncertainties at most."""
    if radius is not None and not (np.isfinite(radius) and radius > 0):
        raise PixelregError(f"--radius must be above 0 px, got {radius:g}")
    if gap < 0:
        raise PixelregError(f"--gap must be 0 or more frames, got {gap}")
    fixed = radius is not None
    if radius is None:
        radius = MOST_RADIUS * median_uncertainty(table)
    uncertainty = table["uncertainty"]
    known = np.isfinite(uncertainty) & (uncertainty > 0)
    weight = 1.0 / np.where(known, uncertainty, 1.0) ** 2 if known.all() else np.ones(len(table))
    frame = table["frame"]
    event = link_events(table["x"], table["y"], frame, weight, radius, gap, None if fixed else SIGMAS)
    events = int(event.max(initial=-1)) + 1

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(event, values, minlength=events)

    weights = total(weight)
    first = np.full(events, np.iinfo(np.int64).max)
    np.minimum.at(first, event, frame)
    final = np.full(events, np.iinfo(np.int64).min)
    np.maximum.at(final, event, frame)
    values = {
        "frame": first,
        "x": total(weight * table["x"]) / weights,
        "y": total(weight * table["y"]) / weights,
        "n": np.bincount(event, minlength=events),
        "length": final - first + 1,
    }
    given = set(table.given)
    if "photons" in given:
        values["photons"] = total(table["photons"])
    if "background" in given:
        values["background"] = total(table["background"]) / values["n"]
    if "uncertainty" in given:
        values["uncertainty"] = np.sqrt(1.0 / total(1.0 / uncertainty**2))
    if "confidence" in given:
        values["confidence"] = np.full(events, -np.inf)
        np.maximum.at(values["confidence"], event, table["confidence"])
    if "sigma" in given:
        values["sigma"] = total(table["sigma"]) / values["n"]
    if "z" in given:
        z_weight = 1.0 / table["uncertainty_z"] ** 2 if "uncertainty_z" in given else np.ones(len(table))
        values["z"] = total(z_weight * table["z"]) / total(z_weight)
        if "uncertainty_z" in given:
            values["uncertainty_z"] = np.sqrt(1.0 / total(z_weight))
    order = np.argsort(first, kind="stable")
    columns = tuple(c for c in table.columns if c != "point")
    merged = Localizations.from_fields(
        table.path, (*columns, "n", "length"), **{name: v[order] for name, v in values.items()}
    ).with_columns()
    rank = np.empty(events, np.int64)
    rank[order] = np.arange(events)
    return Merged(merged, rank[event], radius, fixed)
