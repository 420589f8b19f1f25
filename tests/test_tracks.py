"""Trajectories: trackpy's linker on pixelreg's tables, and motion against closed forms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import trackpy

from pixelreg.errors import PixelregError
from pixelreg.io.locs import COLUMNS, Localizations
from pixelreg.io.tables import read_table, write_table_file
from pixelreg.post.motion import motion
from pixelreg.post.tracking import link_tracks


def brownian(
    seed: int = 0, frames: int = 300, particles: int = 40, diffusion: float = 0.05, sigma: float = 0.03
):
    """Particles diffusing at `diffusion` px^2/frame, seen at instants (no motion blur) with
    `sigma` px of error per axis; the table and each row's true particle."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, np.sqrt(2 * diffusion), (frames, particles, 2))
    where = rng.uniform(10, 190, (particles, 2)) + np.cumsum(steps, axis=0)
    xy = (where + rng.normal(0, sigma, where.shape)).reshape(-1, 2)
    frame = np.repeat(np.arange(frames), particles)
    truth = np.tile(np.arange(particles), frames)
    table = Localizations.from_fields("m.tif", COLUMNS, frame=frame, x=xy[:, 0], y=xy[:, 1]).with_columns()
    return table, truth


def test_sparse_particles_are_linked_whole_and_d_is_recovered():
    table, truth = brownian()
    linked, cuts = link_tracks(table, search_range=2.0, split=0.0)
    assert len(np.unique(linked["track"])) == 40 and cuts == 0
    pure = sum(len(np.unique(truth[linked["track"] == k])) == 1 for k in range(40))
    assert pure >= 38  # a swap where two particles meet, at most twice
    moved = motion(linked, blur=0.0)  # instants: no motion blur
    assert moved.ensemble_diffusion == pytest.approx(0.05, rel=0.05)
    assert np.nanmedian(moved.diffusion) == pytest.approx(0.05, rel=0.1)


def test_the_msd_offset_gives_the_localization_error_back():
    table, _ = brownian(particles=30, diffusion=0.01, sigma=0.1)  # error as large as a step
    moved = motion(link_tracks(table, search_range=1.5)[0], blur=0.0)
    assert moved.ensemble_sigma == pytest.approx(0.1, rel=0.1)
    assert moved.ensemble_diffusion == pytest.approx(0.01, rel=0.1)


def test_a_missed_frame_is_bridged_by_memory():
    table, truth = brownian(particles=5, frames=50)
    gone = (truth == 0) & (table["frame"] == 20)
    table = table.select(~gone)
    assert len(np.unique(link_tracks(table, 2.0, memory=0)[0]["track"])) == 6  # broken in two
    assert len(np.unique(link_tracks(table, 2.0, memory=1)[0]["track"])) == 5


def test_a_step_improbable_for_its_track_is_cut_and_nothing_else():
    table, truth = brownian(particles=20, frames=100)
    swapped = (truth == 3) & (table["frame"] == 50)
    table.locs["x"][swapped] += 2.5  # another particle's spot for a frame: 5.5 RMS steps away
    linked, cuts = link_tracks(table, search_range=3.0)
    assert cuts == 2
    track = linked["track"][truth == 3]  # in frame order
    assert len(np.unique(track[:50])) == len(np.unique(track[51:])) == 1
    assert len(np.unique(track)) == 3  # before, the swapped frame alone, after
    same, _ = link_tracks(table, search_range=3.0, split=0.0)
    assert len(np.unique(same["track"][truth == 3])) == 1  # trackpy's link kept it


def test_cutting_barely_touches_unswapped_brownian_tracks():
    table, truth = brownian(particles=40, frames=300, seed=1)
    linked, cuts = link_tracks(table, search_range=2.0)
    assert cuts <= 5  # expected steps * exp(-9) = 1.4, plus a swap where two particles meet
    moved = motion(linked, blur=0.0)
    assert moved.ensemble_diffusion == pytest.approx(0.05, rel=0.05)


def test_the_tracks_table_is_what_trackpy_reads(tmp_path, run):
    table, _ = brownian(particles=10, frames=60)
    locs = write_table_file(tmp_path / "locs.csv", table)
    result = run("track", locs, "--search-range", 2, "--frame-time", 0.1, "--pixel-size", 100)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / f"locs_tracks.{e}") for e in ("csv", "json", "png")]
    frame = pd.read_csv(tmp_path / "locs_tracks.csv")
    assert list(frame.columns[:4]) == ["frame", "x", "y", "particle"]
    msd = trackpy.emsd(frame, mpp=0.1, fps=10, max_lagtime=4)  # trackpy's own analysis, unchanged
    assert msd.iloc[0] == pytest.approx(4 * 0.05 * 0.01 + 4 * 0.03**2 * 0.01, rel=0.2)  # µm²
    report = json.loads((tmp_path / "locs_tracks.json").read_text())
    assert report["tracks"] == len(np.unique(frame["particle"])) and report["steps_cut"] <= 2
    back = read_table(tmp_path / "locs_tracks.csv")
    tracks = 10 + report["steps_cut"]  # each cut step starts a track
    assert np.array_equal(np.sort(np.unique(back["track"])), np.arange(tracks))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--search-range", "0"], "--search-range must be above 0"),
        (["--search-range", "5000"], "larger than the field"),
        (["--memory", "-1"], "--memory must be 0 or more"),
        (["--split", "-1"], "--split must be 0"),
        (["--frame-time", "0"], "--frame-time must be above 0"),
        (["--out", "{tmp}/t.txt"], "give a .csv file"),
    ],
)
def test_impossible_track_options_are_one_error_line(run, tmp_path, args, message):
    table, _ = brownian(particles=5, frames=20)
    locs = write_table_file(tmp_path / "locs.csv", table)
    result = run("track", locs, *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locs.csv"]


def test_tables_that_cannot_be_tracked_are_refused(tmp_path, run):
    (tmp_path / "one.csv").write_text("path,index,x,y\na.tif,0,1,1\na.tif,0,5,5\n")
    (tmp_path / "empty.csv").write_text("path,index,x,y\n")
    for name, message in (("one.csv", "one frame only"), ("empty.csv", "no localizations")):
        result = run("track", tmp_path / name)
        assert result.exit_code == 1 and message in result.stderr, result.stderr
    with pytest.raises(PixelregError, match="not linked"):
        motion(brownian(particles=2, frames=5)[0])


def test_the_true_trajectories_score_every_link_right_and_trackpy_runs_on_the_movie():
    from pixelreg.bench.tracks import score, table_of, true_particles
    from pixelreg.simulate.foreign import render_brownian_movie

    movie, which, population = render_brownian_movie(frames=40, size=64, particles=12)
    truth = table_of(movie.points)
    truth.locs["track"] = which[np.isfinite(movie.points[..., 0])]
    truth = truth.with_columns("track")
    assert np.array_equal(true_particles(truth, movie.points, which), truth["track"])
    row = score(truth, truth["track"], population, [1.0, 1.0])
    assert row["correct_links"] == row["links"] > 0 and row["correct_share"] == 1.0
    visible = np.isfinite(movie.points[..., 0])
    assert row["links"] <= visible.sum() - len(np.unique(which[visible]))  # a particle's spots less one
