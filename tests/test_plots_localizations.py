"""Super-resolution rendering: mass, position and width of drawn spots checked against the
moment formulas, the skipping of unusable rows, and the figure written whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations
from pixelreg.plots import localizations as superres
from pixelreg.plots.localizations import plot_localizations, render_localizations

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def moments(image: np.ndarray, zoom: int) -> tuple[float, float, float, float, float]:
    """Total, centroid (x, y) in camera px, and variance (x, y) in fine px, of an image whose fine
    pixel (i, j) is centred on camera coordinates ((j + 0.5) / zoom - 0.5, (i + 0.5) / zoom - 0.5)."""
    total = image.sum()
    rows, cols = np.indices(image.shape)
    fx, fy = cols + 0.5, rows + 0.5  # fine coordinates of the pixel centres
    mx, my = (image * fx).sum() / total, (image * fy).sum() / total
    vx, vy = (image * (fx - mx) ** 2).sum() / total, (image * (fy - my) ** 2).sum() / total
    return total, mx / zoom - 0.5, my / zoom - 0.5, vx, vy


@pytest.mark.parametrize(("x", "y", "sigma"), [(7.3, 4.62, 0.25), (3.05, 9.5, 0.1), (10.0, 6.0, 0.6)])
def test_single_spot_has_unit_mass_at_its_position_with_its_width(x: float, y: float, sigma: float) -> None:
    zoom = 10
    image = render_localizations(np.array([x]), np.array([y]), np.array([sigma]), (12, 16), zoom=zoom)
    assert image.shape == (120, 160) and image.dtype == np.float64
    total, cx, cy, vx, vy = moments(image, zoom)
    assert total == pytest.approx(1.0, abs=1e-3)
    assert abs(cx - x) < 0.01 and abs(cy - y) < 0.01
    # a Gaussian integrated over unit pixels and sampled at their centres has variance
    # sigma^2 + 1/12 (Sheppard); the 4-sigma window takes a little off the tails
    for variance in (vx, vy):
        assert np.sqrt(variance - 1 / 12) / zoom == pytest.approx(sigma, rel=0.02)


def test_sum_is_the_number_of_spots_and_a_spot_on_the_edge_keeps_half() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(3, 13, 50), rng.uniform(3, 9, 50)
    sigma = rng.uniform(0.02, 0.5, 50)  # several window sizes
    assert render_localizations(x, y, sigma, (12, 16), zoom=8).sum() == pytest.approx(50, abs=1e-9)
    on_edge = render_localizations(np.array([-0.5]), np.array([6.0]), np.array([0.3]), (12, 16), zoom=8)
    assert on_edge.sum() == pytest.approx(0.5, abs=1e-3)


def test_batches_do_not_change_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    x, y, sigma = rng.uniform(-0.5, 15.5, 300), rng.uniform(-0.5, 11.5, 300), rng.uniform(0.05, 0.4, 300)
    whole = render_localizations(x, y, sigma, (12, 16), zoom=6)
    monkeypatch.setattr(superres, "CHUNK_ELEMENTS", 50)
    monkeypatch.setattr(superres, "WEIGHT_BATCH", 40)
    np.testing.assert_allclose(render_localizations(x, y, sigma, (12, 16), zoom=6), whole, atol=1e-12)


def test_unusable_positions_are_skipped() -> None:
    x = np.array([np.nan, 3.0, -0.6, 16.5, 5.0, np.inf])
    y = np.array([2.0, np.nan, 2.0, 2.0, 11.5, 4.0])
    image = render_localizations(x, y, np.full(6, 0.2), (12, 16), zoom=4)
    assert image.sum() == 0.0
    keep = render_localizations(np.append(x, 8.0), np.append(y, 6.0), np.full(7, 0.2), (12, 16), zoom=4)
    alone = render_localizations(np.array([8.0]), np.array([6.0]), np.array([0.2]), (12, 16), zoom=4)
    np.testing.assert_array_equal(keep, alone)


def test_missing_or_too_small_uncertainty_is_drawn_at_the_least_sigma() -> None:
    x, y, zoom = np.array([5.2, 9.9]), np.array([4.4, 7.0]), 5
    least = render_localizations(x, y, np.full(2, 1 / zoom), (12, 16), zoom=zoom)
    for uncertainty in (None, np.array([np.nan, np.nan]), np.array([0.001, np.nan])):
        np.testing.assert_allclose(render_localizations(x, y, uncertainty, (12, 16), zoom=zoom), least)
    chosen = render_localizations(x, y, np.array([np.nan, 0.01]), (12, 16), zoom=zoom, least_sigma=0.3)
    np.testing.assert_allclose(chosen, render_localizations(x, y, np.full(2, 0.3), (12, 16), zoom=zoom))


@pytest.mark.parametrize("zoom", [0, -2, 51, 2.5])
def test_bad_zoom_is_refused(zoom: float) -> None:
    with pytest.raises(PixelregError, match="zoom"):
        render_localizations(np.zeros(1), np.zeros(1), None, (8, 8), zoom=zoom)  # type: ignore[arg-type]


def test_too_large_an_image_is_refused_before_it_is_allocated() -> None:
    with pytest.raises(PixelregError, match="smaller zoom"):
        render_localizations(np.zeros(1), np.zeros(1), None, (2048, 2048), zoom=10)


def test_mismatched_columns_are_refused() -> None:
    with pytest.raises(PixelregError, match="one value per localization"):
        render_localizations(np.zeros(3), np.zeros(2), None, (8, 8))


def _table(n: int, photometry: bool) -> Localizations:
    rng = np.random.default_rng(3)
    locs = {"x": rng.uniform(0, 31, n), "y": rng.uniform(0, 23, n), "frame": rng.integers(0, 20, n)}
    if photometry:
        locs["photons"] = rng.lognormal(7, 0.5, n)
        locs["uncertainty"] = rng.uniform(0.05, 0.2, n)
    locs["x"][0] = np.nan  # a row without a position: counted, not drawn
    return Localizations.from_fields("movie.tif", **locs)


@pytest.mark.parametrize("photometry", [True, False])
def test_plot_writes_one_png_and_nothing_else(tmp_path: Path, photometry: bool) -> None:
    path = tmp_path / "locs.png"
    out = plot_localizations(_table(400, photometry), (24, 32), path, zoom=8, title="test movie")
    assert out == path
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["locs.png"]
