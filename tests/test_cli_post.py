"""The commands after localization as a user runs them: drift | merge | filter | plot through
files, each printing what it wrote, and bad input as one `Error:` line with nothing left behind."""

from __future__ import annotations

import h5py
import pytest

from pixelreg.io.tables import read_table, write_table_file
from pixelreg.simulate.experiment import blinking_experiment


@pytest.fixture(scope="module")
def locs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    return write_table_file(folder / "locs.csv", blinking_experiment(seed=2, frames=1200).table)


def test_the_chain_runs_through_files_and_prints_what_it_wrote(run, locs, tmp_path):
    drifted = run("drift", locs, "--out", tmp_path / "undrifted.csv")
    assert drifted.exit_code == 0, drifted.stderr
    assert drifted.stdout.split() == [
        str(tmp_path / n) for n in ("undrifted.csv", "undrifted_drift.csv", "undrifted_drift.png")
    ]
    assert "peak to peak" in drifted.stderr
    trace = (tmp_path / "undrifted_drift.csv").read_text().splitlines()
    assert trace[0] == "frame,x_px,y_px,x_nm,y_nm" and len(trace) == 1201
    merged = run("merge", tmp_path / "undrifted.csv", "--quiet")
    assert merged.exit_code == 0 and merged.stdout.strip() == str(tmp_path / "undrifted_merged.csv")
    kept = run("filter", tmp_path / "undrifted_merged.csv", "--photons", "1000:", "--region", "5:60,5:60",
               "--out", tmp_path / "final.hdf5")  # fmt: skip
    assert kept.exit_code == 0, kept.stderr
    assert kept.stdout.split() == [str(tmp_path / "final.hdf5"), str(tmp_path / "final.yaml")]
    final = read_table(tmp_path / "final.hdf5")
    assert (final["photons"] >= 1000).all() and final["x"].min() >= 5 and final["n"].min() >= 1
    with h5py.File(tmp_path / "final.hdf5") as stream:
        assert {"len", "n", "photon_rate"} <= set(stream["locs"].dtype.names)
    plotted = run("plot", tmp_path / "final.hdf5", "--quiet")
    assert plotted.exit_code == 0 and plotted.stdout.strip() == str(tmp_path / "final.png")
    measured = run("resolution", tmp_path / "undrifted.csv", "--json")
    assert measured.exit_code == 0, measured.stderr
    assert '"frc_resolution_nm"' in measured.stdout and (tmp_path / "undrifted_resolution.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drift", "{locs}", "--segment", "3"], "give --segment"),
        (["drift", "{locs}", "--fiducials"], "no fiducial"),
        (["drift", "{locs}", "--out", "{tmp}/x.hdf5", "--format", "csv"], "give --out a .csv name"),
        (["drift", "{locs}", "--out", "{locs}"], "is one of this command's inputs"),
        (["drift", "{tmp}/missing.csv"], "localization table not found"),
        (["merge", "{locs}", "--radius", "-1"], "--radius must be above 0 px"),
        (["merge", "{locs}", "--gap", "-2"], "--gap must be 0 or more"),
        (["filter", "{locs}"], "give a range to filter by"),
        (["filter", "{locs}", "--photons", "9:1"], "LO is above HI"),
        (["filter", "{locs}", "--confidence", "0.5:"], "no confidence column"),
        (["filter", "{locs}", "--region", "1:2"], "--region takes X0:X1,Y0:Y1"),
        (["resolution", "{locs}", "--out", "{tmp}/r.jpg"], "give a .png file"),
        (["resolution", "{tmp}/corrupt.hdf5"], "not a readable HDF5 file"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(run, locs, tmp_path, args, message):
    (tmp_path / "corrupt.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    before = sorted(p.name for p in tmp_path.iterdir()) + sorted(p.name for p in locs.parent.iterdir())
    result = run(*(a.format(locs=locs, tmp=tmp_path) for a in args))
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert (
        sorted(p.name for p in tmp_path.iterdir()) + sorted(p.name for p in locs.parent.iterdir()) == before
    )


def test_no_output_replaces_an_input_and_picasso_keeps_its_pixel_size(run, locs, tmp_path):
    copy = tmp_path / "a_drift.csv"
    copy.write_bytes(locs.read_bytes())
    result = run("drift", copy, "--out", tmp_path / "a.csv")  # its trace would be a_drift.csv
    assert result.exit_code == 1 and "is one of this command's inputs" in result.stderr
    assert copy.read_bytes() == locs.read_bytes() and not (tmp_path / "a.csv").exists()
    table = read_table(locs).select(slice(0, 3000))
    write_table_file(tmp_path / "p.hdf5", table, "picasso", pixel_size=130.0)
    clash = run("merge", tmp_path / "p.hdf5", "--out", tmp_path / "p.h5")  # p.yaml is the input's
    assert clash.exit_code == 1 and "p.yaml" in clash.stderr
    merged = run("merge", tmp_path / "p.hdf5", "--json")
    assert merged.exit_code == 0, merged.stderr
    assert "at most" in merged.stderr and '"events"' in merged.stdout
    report = run("resolution", tmp_path / "p.hdf5", "--json")
    assert report.exit_code == 0 and '"pixel_size_nm": 130.0' in report.stdout  # from its YAML
