"""The localization table: one record per spot, its fields and dtypes declared once.

Every localization that pixelreg finds, writes or reads is a record of `LOCS_DTYPE` (as
Picasso's `LOCS_DTYPE` is): `predict` builds them, the CSV and ThunderSTORM writers and the
reader use them, and the super-resolution rendering draws them. Positions are in camera pixels,
x the column and y the row, pixel centres on integer coordinates (pixel (0, 0) is the point
(0, 0)); `frame` is 0-based within its file. A field the source has no value for is NaN (-1
for `point`), and `columns` says which of the table's columns it gives at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# name, dtype, meaning
LOCS_FIELDS = (
    ("frame", "i8", "the frame in its file, 0-based (the CSV's `index`)"),
    ("point", "i8", "which of a fixed number of points per image (-1: a counted detection)"),
    ("x", "f8", "column, px"),
    ("y", "f8", "row, px"),
    ("confidence", "f8", "a counting model's probability that the spot is there, 0 to 1"),
    ("photons", "f8", "detected photons in the spot"),
    ("background", "f8", "background photons per pixel under it"),
    ("uncertainty", "f8", "the Cramér-Rao bound on its position, px per axis"),
    ("z", "f8", "depth, nm from focus, positive away from the objective (a 3D model's)"),
    ("uncertainty_z", "f8", "the expected error of z, nm"),
    ("sigma", "f8", "the PSF's standard deviation, px (ThunderSTORM's sigma, Picasso's sx and sy)"),
    ("n", "i8", "localizations merged into this row by `merge` (-1: not merged)"),
    ("length", "i8", "frames from a merged row's first to its last, dark ones included (-1: not merged)"),
    ("track", "i8", "the trajectory the localization belongs to, by `track` (-1: not linked)"),
)
LOCS_DTYPE = np.dtype([(name, kind) for name, kind, _ in LOCS_FIELDS])
# pixelreg's CSV: `path`, then the fields by these names (`point` only where a model gives it)
COLUMNS = ("path", "index", "x", "y", "confidence", "photons", "background", "uncertainty")
COLUMNS_3D = (*COLUMNS, "z", "uncertainty_z")  # a 3D model's table
EXTRA_COLUMNS = (
    "z",
    "uncertainty_z",
    "sigma",
    "n",
    "length",
    "track",
)  # after COLUMNS, where a table has them
FIELD_OF_COLUMN = {"index": "frame"}
DECIMALS = 4  # table cells carry positions to 1e-4 px (and depths to 1e-4 nm)


@dataclass
class Localizations:
    """The localizations of one file (`path`): records of LOCS_DTYPE, the table's `columns`
    (COLUMNS, with `point` after `index` for a model of several points an image) and those of
    them its source gives values for (`given`; the others are empty cells)."""

    path: str
    locs: np.ndarray = field(default_factory=lambda: np.zeros(0, LOCS_DTYPE))
    columns: tuple[str, ...] = COLUMNS
    given: tuple[str, ...] = COLUMNS

    @classmethod
    def from_fields(cls, path: str, columns: tuple[str, ...] = COLUMNS, **values: Any) -> Localizations:
        """A table of the given field arrays (all of one length), which are the columns given;
        the other fields NaN (`point` -1)."""
        count = len(next(iter(values.values()))) if values else 0
        locs = np.zeros(count, LOCS_DTYPE)
        for name, kind, _ in LOCS_FIELDS:
            locs[name] = values[name] if name in values else (-1 if kind == "i8" else np.nan)
        named = {FIELD_OF_COLUMN.get(c, c): c for c in columns}
        given = tuple(c for c in columns if c == "path" or FIELD_OF_COLUMN.get(c, c) in values)
        assert set(values) <= set(named), f"fields {sorted(set(values) - set(named))} are no columns"
        return cls(path, locs, columns, given)

    def median_uncertainty(self) -> float | None:
        """The median of the uncertainties known (finite, above 0), px; None where none is."""
        known = self.locs["uncertainty"][
            np.isfinite(self.locs["uncertainty"]) & (self.locs["uncertainty"] > 0)
        ]
        return float(np.median(known)) if len(known) else None

    def inverse_variances(self) -> np.ndarray | None:
        """1 / uncertainty^2 of each row, where every row has an uncertainty (above 0); else None."""
        uncertainty = self.locs["uncertainty"]
        if not (np.isfinite(uncertainty) & (uncertainty > 0)).all():
            return None
        return 1.0 / uncertainty**2

    def by_frame(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows laid out frame by frame, as `evaluate.matching.pair_greedy` takes points:
        positions (frames, K, 2), NaN padded, and the row of each (frames, K), -1 padding."""
        frame = self.locs["frame"]
        order = np.argsort(frame, kind="stable")
        sorted_frames = frame[order]
        slot = np.arange(len(order)) - np.searchsorted(sorted_frames, sorted_frames)  # place in its frame
        most = max(1, int(slot.max(initial=0)) + 1)
        points = np.full((frames, most, 2), np.nan)
        rows = np.full((frames, most), -1, np.int64)
        points[sorted_frames, slot] = np.column_stack([self.locs["x"], self.locs["y"]])[order]
        rows[sorted_frames, slot] = order
        return points, rows

    def select(self, keep: np.ndarray) -> Localizations:
        """The rows where `keep` (a mask or indices) says, with the same columns."""
        return replace(self, locs=self.locs[keep])

    def with_columns(self, *names: str) -> Localizations:
        """The same rows with the columns `names` given too (in their place in the table)."""
        present = set(self.columns) | set(names)
        order = (*COLUMNS[:2], "point", *COLUMNS[2:], *EXTRA_COLUMNS)
        columns = tuple(c for c in order if c in present)
        return replace(
            self, columns=columns, given=tuple(c for c in columns if c in self.given or c in names)
        )

    def __len__(self) -> int:
        return len(self.locs)

    def __getitem__(self, name: str) -> np.ndarray:
        """A field's values (`x`, `photons`, ...), by field or CSV column name."""
        return self.locs[FIELD_OF_COLUMN.get(name, name)]

    def rows(self) -> Iterator[dict[str, Any]]:
        """One dict per localization, keyed by `columns` in their order: numbers rounded to
        DECIMALS as Python numbers, None in a column the source does not give."""
        given = [c for c in self.given if c != "path"]
        cells = []
        for column in given:
            values = self[column]
            cells.append(values.tolist() if values.dtype.kind == "i" else np.round(values, DECIMALS).tolist())
        for record in zip(*cells, strict=True):
            row = dict(zip(given, record, strict=True))
            yield {column: self.path if column == "path" else row.get(column) for column in self.columns}
