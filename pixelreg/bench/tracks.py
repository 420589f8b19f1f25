"""`bench track`: trajectories from a particle-tracking movie, pixelreg's against trackpy's.

The movie (`simulate.foreign.render_brownian_movie`) holds Brownian particles of two diffusion
coefficients a factor of ten apart, entering, leaving and missing from single frames, bright
spots on an uneven background. Both pipelines link with trackpy's `link` at the same memory,
each at the search range (and trackpy.locate at the minmass) that gives it the most correct
links less wrong ones: trackpy.locate + link, and calibrate + train + predict + `track`. A link is two
consecutive localizations of a track; it is correct when both lie within 1 px of the same true
particle in their frames. D of each population is the ensemble D of the tracks whose
localizations are mostly of that population's particles, beside D of the true trajectories.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import pair_greedy
from pixelreg.io.locs import COLUMNS, Localizations
from pixelreg.post.motion import motion
from pixelreg.post.tracking import link_tracks
from pixelreg.simulate.foreign import render_brownian_movie

SEARCH_RANGES = (2.0, 3.0, 4.0, 5.0, 6.0)  # px: the grid both pipelines are tuned over
MEMORY = 1
MATCH_PX = 1.0


def table_of(points: np.ndarray, keep: np.ndarray | None = None) -> Localizations:
    """A table of (T, M, 2) points, NaN padded (and where `keep` says)."""
    frame, spot = np.nonzero(np.isfinite(points[..., 0]) if keep is None else keep)
    xy = points[frame, spot]
    return Localizations.from_fields("movie", COLUMNS, frame=frame, x=xy[:, 0], y=xy[:, 1]).with_columns()


def true_particles(table: Localizations, points: np.ndarray, which: np.ndarray) -> np.ndarray:
    """The true particle of each localization: the true spot of its frame it pairs with within
    MATCH_PX (`pair_greedy`, as every score of pixelreg pairs); -1 where none."""
    found, rows = table.by_frame(len(points))
    paired = pair_greedy(found, points, MATCH_PX)
    frame, spot = np.nonzero(paired >= 0)
    particle = np.full(len(table), -1)
    particle[rows[frame, paired[frame, spot]]] = which[frame, spot]
    return particle


def score(
    linked: Localizations, particle: np.ndarray, population: np.ndarray, true_d: list[float]
) -> dict[str, Any]:
    """Links made and correct, tracks, and each population's D against the true trajectories'."""
    order = np.lexsort((linked["frame"], linked["track"]))
    track, who = linked["track"][order], particle[order]
    link = track[1:] == track[:-1]
    correct = link & (who[1:] == who[:-1]) & (who[1:] >= 0)
    row: dict[str, Any] = {
        "localizations": len(linked),
        "tracks": int(len(np.unique(track))),
        "links": int(link.sum()),
        "correct_links": int(correct.sum()),
        "correct_share": round(float(correct.sum() / max(link.sum(), 1)), 4),
    }
    owner = np.full(int(track.max()) + 1, -1)
    for k in np.unique(track):  # each track's population: that of most of its matched localizations
        mine = who[track == k]
        mine = mine[mine >= 0]
        if len(mine):
            owner[k] = population[np.bincount(mine).argmax()]
    for kind in (0, 1):
        subset = linked.select(owner[linked["track"]] == kind)
        d = motion(subset).ensemble_diffusion if len(subset) else float("nan")
        row[f"diffusion_{kind}"] = round(d, 5)
        row[f"diffusion_{kind}_over_true"] = round(d / true_d[kind], 4)
    return row


def merit(row: dict[str, Any]) -> int:
    """What tuning maximizes: correct links less wrong ones (a link to a false detection, or
    across two particles, costs what a correct one gains)."""
    return 2 * row["correct_links"] - row["links"]


def best_linked(
    table: Localizations, particle: np.ndarray, population: np.ndarray, true_d: list[float]
) -> dict[str, Any]:
    """The table linked at each search range of the grid; the row of the most merit."""
    best: dict[str, Any] | None = None
    for search in SEARCH_RANGES:
        try:
            row = score(link_tracks(table, search, MEMORY), particle, population, true_d)
        except PixelregError:
            continue
        row["search_range_px"] = search
        if best is None or merit(row) > merit(best):
            best = row
    assert best is not None
    return best


def run_track_bench(
    out: Path, epochs: int, device: str, reporter: Any, say: Callable[[str], None]
) -> dict[str, Any]:
    """Both pipelines on the movie, each tuned at its best, beside the true trajectories."""
    import trackpy

    from pixelreg.bench.calibration import localized_movie

    say("[bold]track[/bold]: rendering the movie")
    movie, which, population = render_brownian_movie()
    frames = movie.frames
    truth = table_of(movie.points)
    truth.locs["track"] = which[np.isfinite(movie.points[..., 0])]
    truth = truth.with_columns("track")
    true_motion = [
        motion(truth.select(population[truth["track"]] == kind)).ensemble_diffusion for kind in (0, 1)
    ]
    results: dict[str, Any] = {
        "frames": len(frames),
        "spots": len(truth),
        "particles": int(len(np.unique(truth["track"]))),
        "true_links": score(truth, truth["track"], population, true_motion)["links"],
        "diffusion_true": [round(d, 5) for d in true_motion],
    }
    say("[bold]track[/bold]: trackpy.locate at each minmass")
    trackpy.quiet()
    diameter = 2 * int(np.ceil(2 * movie.truth["sigma"])) + 1
    located = trackpy.batch(list(frames.astype(np.float64)), diameter, minmass=0, processes=1)
    best = None
    for minmass in np.quantile(located["mass"], (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8)):
        kept = located[located["mass"] >= minmass]
        theirs = Localizations.from_fields(
            "movie", COLUMNS, frame=kept["frame"].to_numpy(), x=kept["x"].to_numpy(), y=kept["y"].to_numpy()
        ).with_columns()
        row = best_linked(theirs, true_particles(theirs, movie.points, which), population, true_motion)
        row["minmass"] = round(float(minmass), 1)
        if best is None or merit(row) > merit(best):
            best = row
    results["trackpy"] = best
    say("[bold]track[/bold]: calibrating, training and localizing")
    started = time.perf_counter()
    found, _ = localized_movie(movie, out, epochs, device, reporter)
    row = best_linked(found, true_particles(found, movie.points, which), population, true_motion)
    row["seconds"] = round(time.perf_counter() - started, 1)
    results["pixelreg"] = row
    return results
