"""After localization: Picasso's files, drift, merge, filter and resolution, each against an
oracle (a closed form, the simulated experiment's truth, Picasso's documented format)."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import yaml

from pixelreg.errors import PixelregError
from pixelreg.io.locs import COLUMNS, Localizations
from pixelreg.io.tables import read_table, write_table_file
from pixelreg.post.drift import LEAST_SEGMENT_LOCS, estimate_drift, fiducial_drift, undrift
from pixelreg.post.filter import filter_table
from pixelreg.post.merge import merge_events
from pixelreg.post.resolution import nena, ring_correlation
from pixelreg.simulate.experiment import blinking_experiment
from pixelreg.simulate.render import expected_image
from pixelreg.simulate.spec import DataSpec

# Picasso's documented `locs` record (docs/files.rst; localize's least-squares fits), and the
# fields link adds: written out here by hand, not taken from pixelreg's own declaration
PICASSO_DOCUMENTED = [
    ("frame", "<u4"), ("x", "<f4"), ("y", "<f4"), ("photons", "<f4"), ("sx", "<f4"), ("sy", "<f4"),
    ("bg", "<f4"), ("lpx", "<f4"), ("lpy", "<f4"),
]  # fmt: skip
PICASSO_LINKED = [("len", "<u4"), ("n", "<u4"), ("photon_rate", "<f4")]


@pytest.fixture(scope="module")
def experiment():
    return blinking_experiment(seed=1, frames=1500)


def table_of(**fields) -> Localizations:
    extra = tuple(name for name in ("n", "length") if name in fields)
    return Localizations.from_fields("t.tif", (*COLUMNS, *extra), **fields).with_columns()


def residual_nm(drift, truth: np.ndarray) -> float:
    """The rms (nm, x and y together) of the drift's error, less its mean: a constant offset is
    no drift."""
    error = np.column_stack([drift.x, drift.y]) - truth
    error -= error.mean(axis=0)
    return float(np.sqrt((error**2).sum(axis=1).mean()) * 100)


def with_true_drift_removed(experiment) -> Localizations:
    locs = experiment.table.locs.copy()
    locs["x"] -= experiment.drift[locs["frame"], 0]
    locs["y"] -= experiment.drift[locs["frame"], 1]
    return dataclasses.replace(experiment.table, locs=locs)


# --- Picasso's files -------------------------------------------------------------------------


def test_picasso_file_has_the_documented_fields_and_metadata(experiment, tmp_path):
    merged = merge_events(experiment.table).table
    path = write_table_file(tmp_path / "merged.hdf5", merged, "picasso", pixel_size=130.0)
    with h5py.File(path) as stream:
        assert list(stream) == ["locs"]
        locs = stream["locs"][...]
    assert [(name, locs.dtype[name].str) for name in locs.dtype.names] == PICASSO_DOCUMENTED + PICASSO_LINKED
    assert np.array_equal(locs["frame"], merged["frame"]) and np.array_equal(locs["n"], merged["n"])
    assert np.allclose(locs["x"], merged["x"], atol=1e-4) and np.allclose(locs["lpx"], merged["uncertainty"])
    assert np.allclose(locs["photon_rate"], merged["photons"] / merged["n"], rtol=1e-6)
    info = list(yaml.safe_load_all((tmp_path / "merged.yaml").read_text()))
    first = info[0]  # Picasso reads the movie's size from the first document
    assert first["Frames"] == int(merged["frame"].max()) + 1
    assert first["Width"] > merged["x"].max() and first["Height"] > merged["y"].max()
    assert any(document.get("Pixelsize") == 130.0 for document in info)
    back = read_table(path)
    assert "sigma" not in back.given  # written as 0 for Picasso, read back as unknown
    assert np.allclose(back["y"], merged["y"], atol=1e-4) and np.array_equal(back["length"], merged["length"])


@pytest.mark.parametrize("where", [(12.0, 7.0), (12.3, 7.6), (5.5, 15.2)])
def test_picasso_and_pixelreg_put_a_spot_at_the_same_coordinates(where, tmp_path):
    """Picasso's localize fits a box around the brightest pixel on a grid of integer offsets
    (`np.arange(-r, r + 1)`) and adds the pixel's index: its x for a spot is the peak column
    plus the box's weighted offset, the centre of pixel i being x = i, as in pixelreg."""
    image = expected_image(np.array([[where]]), DataSpec(height=24, width=24, blur=1.2))[0]
    row, col = np.unravel_index(int(np.argmax(image)), image.shape)
    r = 3
    box = image[row - r : row + r + 1, col - r : col + r + 1]
    grid = np.arange(-r, r + 1)
    picasso_x = col + (box.sum(axis=0) * grid).sum() / box.sum()
    picasso_y = row + (box.sum(axis=1) * grid).sum() / box.sum()
    table = table_of(frame=np.array([0]), x=np.array([where[0]]), y=np.array([where[1]]))
    write_table_file(tmp_path / "spot.hdf5", table, "picasso")
    with h5py.File(tmp_path / "spot.hdf5") as stream:
        written = stream["locs"][0]
    assert written["x"] == pytest.approx(picasso_x, abs=0.05) and written["y"] == pytest.approx(
        picasso_y, abs=0.05
    )


def test_every_format_reads_back_the_same_table(experiment, tmp_path):
    table = experiment.table.select(slice(0, 500))
    for form, name in (("csv", "a.csv"), ("thunderstorm", "b.csv"), ("picasso", "c.hdf5")):
        back = read_table(write_table_file(tmp_path / name, table, form, 160.0), pixel_size=160.0)
        assert np.array_equal(back["frame"], table["frame"]), form
        for field in ("x", "y", "photons", "background", "uncertainty"):
            assert np.allclose(back[field], table[field], atol=2e-4, rtol=1e-6), (form, field)


def test_a_table_of_several_files_numbers_their_frames_on(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("path,index,x,y\na.tif,0,1,1\na.tif,4,2,2\nb.tif,0,3,3\nb.tif,2,4,4\n")
    assert read_table(path)["frame"].tolist() == [0, 4, 5, 7]


def test_picasso_keeps_unknowns_unknown_and_refuses_impossible_frames(tmp_path):
    table = table_of(
        frame=np.array([0, 1]), x=np.array([1.0, 2.0]), y=np.array([1.0, 2.0]),
        uncertainty=np.array([0.1, np.nan]), n=np.array([3, 1]),
    )  # fmt: skip
    path = write_table_file(tmp_path / "t.hdf5", table, "picasso")
    back = read_table(path)
    assert back["uncertainty"][0] == pytest.approx(0.1) and np.isnan(back["uncertainty"][1])
    assert "length" not in back.given and back["n"].tolist() == [3, 1]  # ThunderSTORM's count, no span
    (tmp_path / "neg.csv").write_text("path,index,x,y\na.tif,-5,1,1\n")
    with pytest.raises(PixelregError, match="frame -5 is no frame"):
        read_table(tmp_path / "neg.csv")


def test_a_corrupt_or_foreign_hdf5_is_one_error(tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(PixelregError, match="not a readable HDF5"):
        read_table(bad)
    with h5py.File(tmp_path / "other.hdf5", "w") as stream:
        stream.create_dataset("images", data=np.zeros(3))
    with pytest.raises(PixelregError, match="no `locs` dataset"):
        read_table(tmp_path / "other.hdf5")


# --- merge -----------------------------------------------------------------------------------


def test_merge_weights_positions_and_joins_across_allowed_gaps():
    # one molecule in frames 0, 1, 2; another in 0, 1; the first again after two dark frames
    table = table_of(
        frame=np.array([0, 1, 2, 0, 1, 5, 6]),
        x=np.array([1.0, 1.02, 0.97, 5.0, 5.02, 1.0, 1.01]),
        y=np.full(7, 2.0),
        uncertainty=np.array([0.02, 0.01, 0.02, 0.02, 0.02, 0.02, 0.02]),
        photons=np.full(7, 100.0),
    )
    merged = merge_events(table).table
    assert merged["frame"].tolist() == [0, 0, 5] and merged["n"].tolist() == [3, 2, 2]
    weights = 1 / np.array([0.02, 0.01, 0.02]) ** 2
    assert merged["x"][0] == pytest.approx((weights * [1.0, 1.02, 0.97]).sum() / weights.sum())
    assert merged["uncertainty"][0] == pytest.approx(1 / np.sqrt(weights.sum()))
    assert merged["photons"].tolist() == [300.0, 200.0, 200.0] and merged["length"].tolist() == [3, 2, 2]
    assert len(merge_events(table, gap=2).table) == 2  # the dark frames 3 and 4 bridged
    assert len(merge_events(table, radius=0.001).table) == 7  # nothing that close
    again = merge_events(merge_events(table, gap=2).table, gap=10).table  # merged rows merged again
    assert again["n"].tolist() == [5, 2] and again["length"].tolist() == [7, 2]


def test_merge_counts_the_blinking_events_and_reaches_the_combined_bound(experiment):
    merged = merge_events(with_true_drift_removed(experiment))
    assert len(merged.table) == pytest.approx(experiment.events, rel=0.05)
    rows = merged.event
    true_x = np.bincount(rows, experiment.true_x) / np.bincount(rows)
    true_y = np.bincount(rows, experiment.true_y) / np.bincount(rows)
    mse = ((merged.table["x"] - true_x) ** 2 + (merged.table["y"] - true_y) ** 2) / 2
    bound = np.mean(merged.table["uncertainty"] ** 2)  # the combined Thompson bound of each event
    assert np.sqrt(mse.mean() / bound) == pytest.approx(1.0, abs=0.1)


# --- drift -----------------------------------------------------------------------------------


def test_drift_is_recovered_within_3_nm_and_removed(experiment):
    drift = estimate_drift(experiment.table)
    assert residual_nm(drift, experiment.drift) < 3.0
    start = int(round(drift.centres[0]))  # zero at the first segment's mean frame
    assert drift.x[start] == drift.y[start] == 0.0
    corrected = undrift(experiment.table, drift)
    truth = with_true_drift_removed(experiment)
    offset = (corrected["x"] - truth["x"]).mean()
    assert np.abs(corrected["x"] - truth["x"] - offset).max() < 0.1  # 10 nm at worst


def test_drift_has_the_sign_of_the_stage_moving_the_spots():
    rng = np.random.default_rng(0)
    sites = rng.uniform(5, 45, (300, 2))
    frame = np.repeat(np.arange(100), 300)
    shift = np.column_stack([0.01 * frame, -0.005 * frame])  # px: spots move right and up
    xy = np.tile(sites, (100, 1)) + shift + rng.normal(0, 0.02, (len(frame), 2))
    table = table_of(frame=frame, x=xy[:, 0], y=xy[:, 1], uncertainty=np.full(len(frame), 0.02))
    drift = estimate_drift(table, segment=10)
    assert drift.x[-1] - drift.x[0] == pytest.approx(0.99, abs=0.02)
    assert drift.y[-1] - drift.y[0] == pytest.approx(-0.495, abs=0.02)


def test_fiducials_give_the_drift_where_the_table_holds_them(experiment):
    rng = np.random.default_rng(3)
    frames = len(experiment.drift)
    spots = []
    for x, y in ((10, 10), (40, 45), (55, 12)):  # present in every frame, precise to 2 nm
        xy = np.array([x, y]) + experiment.drift + rng.normal(0, 0.02, (frames, 2))
        spots.append((np.arange(frames), xy))
    frame = np.concatenate([experiment.table["frame"], *(f for f, _ in spots)])
    xy = np.concatenate(
        [np.column_stack([experiment.table["x"], experiment.table["y"]]), *(p for _, p in spots)]
    )
    table = table_of(frame=frame, x=xy[:, 0], y=xy[:, 1])
    drift = fiducial_drift(table)
    assert drift.method == "fiducials (3)"
    assert residual_nm(drift, experiment.drift) < 2.0  # 2 nm per frame over three fiducials
    with pytest.raises(PixelregError, match="no fiducial"):
        fiducial_drift(experiment.table)


def test_fiducials_are_followed_however_far_the_stage_drifts():
    rng = np.random.default_rng(5)
    frames = 400
    walk = np.column_stack([np.linspace(0, 3.0, frames), np.linspace(0, -2.0, frames)])  # 300 nm, 200 nm
    xy = np.concatenate([np.array(p) + walk + rng.normal(0, 0.01, (frames, 2)) for p in ((10, 10), (30, 40))])
    table = table_of(frame=np.tile(np.arange(frames), 2), x=xy[:, 0], y=xy[:, 1])
    drift = fiducial_drift(table)
    assert drift.method == "fiducials (2)" and abs(drift.x[-1] - 3.0) < 0.05 and abs(drift.y[-1] + 2.0) < 0.05


def test_fading_density_still_gets_every_segment_its_least():
    rng = np.random.default_rng(6)
    frames = 3000
    frame = np.sort(np.minimum(rng.exponential(600, 12000), frames - 1).astype(int))  # bleaching
    sites = rng.uniform(5, 55, (400, 2))
    xy = sites[rng.integers(0, 400, len(frame))] + rng.normal(0, 0.05, (len(frame), 2))  # no drift
    table = table_of(frame=frame, x=xy[:, 0], y=xy[:, 1], uncertainty=np.full(len(frame), 0.05))
    drift = estimate_drift(table)
    edges = np.append(np.arange(0, frames, drift.segment), frames)
    counts = np.histogram(frame, edges)[0]
    assert counts[:-1].min() >= LEAST_SEGMENT_LOCS or counts.min() >= LEAST_SEGMENT_LOCS
    assert np.abs(drift.x).max() < 0.05 and np.abs(drift.y).max() < 0.05  # 5 nm of a still stage


def test_too_few_localizations_for_a_segment_says_which_segment_works(experiment):
    table = experiment.table
    with pytest.raises(PixelregError, match=r"give --segment ([\d,]+) or more") as caught:
        estimate_drift(table, segment=5)
    suggested = int(caught.value.args[0].split("give --segment ")[1].split()[0].replace(",", ""))
    drift = estimate_drift(table, segment=suggested)  # the suggestion works
    assert len(drift.centres) >= 2
    few = table.select(slice(0, LEAST_SEGMENT_LOCS))
    with pytest.raises(PixelregError, match="too few for drift"):
        estimate_drift(few)


# --- filter ----------------------------------------------------------------------------------


def test_filter_keeps_the_ranges_and_counts_what_each_drops():
    table = table_of(
        frame=np.arange(6),
        x=np.array([1.0, 2, 3, 4, 5, 6]),
        y=np.zeros(6),
        photons=np.array([100.0, 600, 800, np.nan, 900, 50]),
        uncertainty=np.full(6, 0.1),
    )
    result = filter_table(table, {"photons": (500, np.inf), "frame": (0, 3)})
    assert result.table["x"].tolist() == [2.0, 3.0]  # NaN photons: dropped
    assert result.dropped == {"photons": 3, "frame": 1} and result.total == 6
    with pytest.raises(PixelregError, match="no confidence column"):
        filter_table(table, {"confidence": (0.5, 1.0)})


# --- resolution ------------------------------------------------------------------------------


def test_nena_recovers_a_known_precision():
    rng = np.random.default_rng(2)
    sites = rng.uniform(0, 200, (3000, 2))  # sparse: next-frame neighbours are the same molecule
    frame = np.concatenate([np.arange(3000) * 3, np.arange(3000) * 3 + 1])
    xy = np.concatenate([sites, sites]) + rng.normal(0, 0.1, (6000, 2))  # 10 nm at 100 nm a pixel
    table = table_of(frame=frame, x=xy[:, 0], y=xy[:, 1], uncertainty=np.full(6000, 0.1))
    assert nena(table, 100.0).precision_nm == pytest.approx(10.0, rel=0.05)


def test_frc_of_the_corrected_table_matches_the_true_correction(experiment):
    raw = ring_correlation(experiment.table, 100.0).resolution_nm
    corrected = ring_correlation(undrift(experiment.table, estimate_drift(experiment.table)), 100.0)
    truth = ring_correlation(with_true_drift_removed(experiment), 100.0).resolution_nm
    assert raw is not None and truth is not None and corrected.resolution_nm is not None
    assert corrected.resolution_nm < 0.7 * raw
    assert corrected.resolution_nm == pytest.approx(truth, rel=0.1)


def test_frc_of_two_unrelated_halves_never_correlates():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 60, (20000, 2))  # no structure: the halves share nothing but the field
    table = table_of(frame=np.arange(20000) // 100, x=xy[:, 0], y=xy[:, 1], uncertainty=np.full(20000, 0.1))
    frc = ring_correlation(table, 100.0)
    assert np.abs(frc.smoothed[len(frc.smoothed) // 10 :]).max() < 0.1
