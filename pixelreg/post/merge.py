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


def link_events(
    x: np.ndarray,
    y: np.ndarray,
    frame: np.ndarray,
    weight: np.ndarray,
    radius: float,
    gap: int,
    sigmas: float | None = None,
    follow: bool = False,
) -> np.ndarray:
    """The event (0, 1, ...) of each localization: see the module's docstring. `weight` is each
    one's inverse variance, by which an event's position is its members' mean. With `sigmas`,
    a localization joins an event only within `sigmas` times their combined uncertainty (its
    own and that of the event's mean, from the weights), and `radius` is the most that may be.
    With `follow`, an event is where it was last seen rather than its mean: a track that moves
    (a fiducial with the stage) stays one."""
    event = np.full(len(x), -1, np.int64)
    order = np.argsort(frame, kind="stable")
    starts = np.flatnonzero(np.diff(frame[order], prepend=-np.inf, append=np.inf))
    sums = np.zeros((len(x), 3))  # per event: sum of weights, of weighted x, of weighted y
    last = np.full(len(x), -(10**12), np.int64)  # per event: the last frame it was seen in
    latest = np.zeros((len(x), 2))  # per event: where it was seen last
    open_events = np.zeros(0, np.int64)
    count = 0
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        now = order[begin:end]
        f = int(frame[now[0]])
        open_events = open_events[last[open_events] >= f - gap - 1]
        taken = np.zeros(len(now), bool)
        if len(open_events):
            centres = latest[open_events] if follow else sums[open_events, 1:] / sums[open_events, :1]
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
        latest[joined] = np.column_stack([x[now], y[now]])
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
    if not len(table):
        raise PixelregError("the table holds no localizations")
    fixed = radius is not None
    weights = table.inverse_variances()
    if radius is None:
        if weights is None:
            raise PixelregError(
                "the table does not give every localization an uncertainty to merge by; give --radius"
            )
        radius = MOST_RADIUS * float(table.median_uncertainty() or 0.0)
    weight = np.ones(len(table)) if weights is None else weights
    uncertainty = table["uncertainty"]
    frame = table["frame"]
    event = link_events(table["x"], table["y"], frame, weight, radius, gap, None if fixed else SIGMAS)
    events = int(event.max(initial=-1)) + 1

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(event, values, minlength=events)

    summed = total(weight)
    first = np.full(events, np.iinfo(np.int64).max)
    np.minimum.at(first, event, frame)
    final = np.full(events, np.iinfo(np.int64).min)
    np.maximum.at(final, event, frame)
    values = {
        "frame": first,
        "x": total(weight * table["x"]) / summed,
        "y": total(weight * table["y"]) / summed,
        "n": np.bincount(event, minlength=events),
        "length": final - first + 1,
    }
    rows = values["n"]
    given = set(table.given)
    if "n" in given:  # rows merged before: their counts add up, and their frames run on
        values["n"] = total(np.maximum(table["n"], 1)).astype(np.int64)
        if "length" in given:
            np.maximum.at(final, event, frame + np.maximum(table["length"], 1) - 1)
            values["length"] = final - first + 1
    if "photons" in given:
        values["photons"] = total(table["photons"])
    if "background" in given:
        values["background"] = total(table["background"]) / rows
    if "uncertainty" in given:
        values["uncertainty"] = np.sqrt(1.0 / total(1.0 / uncertainty**2))
    if "confidence" in given:
        values["confidence"] = np.full(events, -np.inf)
        np.maximum.at(values["confidence"], event, table["confidence"])
    if "sigma" in given:
        values["sigma"] = total(table["sigma"]) / rows
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
