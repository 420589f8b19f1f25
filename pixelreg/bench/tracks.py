"""`bench track`: trajectories from particle-tracking movies, pixelreg's against trackpy's.

Each movie (`simulate.foreign.render_brownian_movie`) holds Brownian particles of two diffusion
coefficients a factor of ten apart, entering, leaving and missing from single frames, bright
spots on an uneven background: a sparse one, large enough that the true trajectories give
each D within 2% of the truth, and a dense one, whose particles lie closer to their nearest
neighbour than the search range. Both pipelines link with trackpy's `link` at the same memory,
each at the search range that gives it the most correct links less wrong ones:
trackpy.locate (its minmass chosen for the best detection) + link, and calibrate + train +
predict + `track` (which cuts improbable steps). A link is two consecutive localizations of a
track; it is correct when both lie within 1 px of the same true particle in their frames. D of
each population is the ensemble D of the tracks whose localizations are mostly of that
population's particles, beside D of the true trajectories.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.evaluate.matching import pair_greedy
from pixelreg.evaluate.metrics import best_threshold, threshold_sweep
from pixelreg.io.locs import COLUMNS, Localizations
from pixelreg.post.motion import motion
from pixelreg.post.tracking import link_tracks
from pixelreg.simulate.foreign import render_brownian_movie

SEARCH_RANGES = (2.0, 3.0, 4.0, 5.0, 6.0)  # px: the grid both pipelines are tuned over
MEMORY = 1
DIFFUSION = (0.05, 0.5)  # px^2/frame: the two populations'
MATCH_PX = 1.0
EXPERIMENTS = {  # name: the movie's size (px) and particles
    "sparse": (256, 400),
    "dense": (128, 400),
}
MINMASS_QUANTILES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


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
    table: Localizations, particle: np.ndarray, population: np.ndarray, true_d: list[float], split: float
) -> dict[str, Any]:
    """The table linked at each search range of the grid (cut at `split`, 0 for none); the row
    of the most merit."""
    best: dict[str, Any] | None = None
    for search in SEARCH_RANGES:
        try:
            linked, cuts = link_tracks(table, search, MEMORY, split)
        except PixelregError:  # trackpy gives up on too large a subnetwork
            continue
        row = score(linked, particle, population, true_d)
        row["steps_cut"] = cuts
        row["search_range_px"] = search
        if best is None or merit(row) > merit(best):
            best = row
    assert best is not None
    return best


def nearest_neighbour(points: np.ndarray) -> float:
    """The median distance (px) from a true particle to its nearest neighbour in its frame."""
    distances = []
    for xy in points:
        xy = xy[np.isfinite(xy[:, 0])]
        if len(xy) > 1:
            d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
            np.fill_diagonal(d, np.inf)
            distances.append(d.min(axis=1))
    return float(np.median(np.concatenate(distances)))


def trackpy_located(frames: np.ndarray, sigma: float, points: np.ndarray) -> Localizations:
    """trackpy.locate's spots (diameter from the PSF) at the minmass, of MINMASS_QUANTILES of
    their masses, with the best Jaccard index against the true spots (`threshold_sweep`)."""
    import trackpy

    trackpy.quiet()
    diameter = 2 * int(np.ceil(2 * sigma)) + 1
    located = trackpy.batch(list(frames.astype(np.float64)), diameter, minmass=0, processes=1)
    every = Localizations.from_fields(
        "movie",
        COLUMNS,
        frame=located["frame"].to_numpy(),
        x=located["x"].to_numpy(),
        y=located["y"].to_numpy(),
    ).with_columns()
    mass = located["mass"].to_numpy()
    found, rows = every.by_frame(len(points))
    scores = np.where(rows >= 0, mass[np.maximum(rows, 0)], -np.inf)
    levels = np.quantile(mass, MINMASS_QUANTILES)
    chosen = best_threshold(threshold_sweep(found, scores, points, levels, MATCH_PX))
    minmass = levels[np.argmin(np.abs(levels - chosen))]  # the level itself: the sweep rounds it
    return every.select(mass >= minmass)


def run_experiment(
    name: str, out: Path, epochs: int, device: str, reporter: Any, say: Callable[[str], None]
) -> dict[str, Any]:
    """One movie: the true trajectories, then both pipelines, each tuned at its best."""
    from pixelreg.bench.calibration import localized_movie
    from pixelreg.post.tracking import SPLIT

    size, particles = EXPERIMENTS[name]
    say(f"[bold]track[/bold] {name}: rendering {particles} particles in {size} × {size} px")
    movie, which, population = render_brownian_movie(size=size, particles=particles, diffusion=DIFFUSION)
    truth = table_of(movie.points)
    truth.locs["track"] = which[np.isfinite(movie.points[..., 0])]
    truth = truth.with_columns("track")
    true_motion = [
        motion(truth.select(population[truth["track"]] == kind)).ensemble_diffusion for kind in (0, 1)
    ]
    results: dict[str, Any] = {
        "frames": len(movie.frames),
        "size_px": size,
        "spots": len(truth),
        "particles": int(len(np.unique(truth["track"]))),
        "nearest_neighbour_px": round(nearest_neighbour(movie.points), 2),
        "true_links": score(truth, truth["track"], population, true_motion)["links"],
        "diffusion_given": list(DIFFUSION),
        "diffusion_true": [round(d, 5) for d in true_motion],
        "diffusion_true_over_given": [round(d / g, 4) for d, g in zip(true_motion, DIFFUSION, strict=True)],
    }
    say(f"[bold]track[/bold] {name}: trackpy.locate + link")
    theirs = trackpy_located(movie.frames, movie.truth["sigma"], movie.points)
    particle = true_particles(theirs, movie.points, which)
    results["trackpy"] = best_linked(theirs, particle, population, true_motion, 0.0)
    say(f"[bold]track[/bold] {name}: calibrating, training and localizing")
    started = time.perf_counter()
    place = out / name
    place.mkdir(parents=True, exist_ok=True)
    found, _ = localized_movie(movie, place, epochs, device, reporter)
    particle = true_particles(found, movie.points, which)
    row = best_linked(found, particle, population, true_motion, SPLIT)
    row["seconds"] = round(time.perf_counter() - started, 1)
    results["pixelreg"] = row
    return results


def run_track_bench(
    out: Path, epochs: int, device: str, reporter: Any, say: Callable[[str], None]
) -> dict[str, Any]:
    """Every experiment of EXPERIMENTS (see the module's docstring)."""
    return {name: run_experiment(name, out, epochs, device, reporter, say) for name in EXPERIMENTS}
