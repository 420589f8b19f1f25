"""Localization tables: pixelreg's CSV and ThunderSTORM's, written row by row and read back.

pixelreg's table holds one row per localization, `path,index,x,y,confidence,photons,background,
uncertainty`, in pixels, with pixel centres on integer coordinates and `index` the 0-based
frame in its file; a cell is empty where the model has no such output.

ThunderSTORM's table (the CSV that ThunderSTORM, Picasso and SMAP read) is in nanometres at a
`pixel_size`, frames 1-based, and follows ImageJ's pixel convention, in which the top-left
corner of the image is (0, 0), so the centre of pixel (0, 0) lies at half a pixel:
x [nm] = (x + 0.5) * pixel_size.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import IO, Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file
from pixelreg.io.locs import COLUMNS, DECIMALS, Localizations

THUNDERSTORM_COLUMNS = (
    "id",
    "frame",
    "x [nm]",
    "y [nm]",
    "sigma [nm]",
    "intensity [photon]",
    "offset [photon]",
    "bkgstd [photon]",
    "uncertainty [nm]",
)
THUNDERSTORM_3D = ("z [nm]", "uncertainty_z [nm]")  # after the others, in a 3D model's table
FORMATS = ("csv", "thunderstorm")
MOST_COORDINATE = 2**20  # px: no camera has a frame this wide


class TableWriter:
    """Writes localization tables (`Localizations`) as pixelreg's CSV or as ThunderSTORM's. The
    header goes out with the first rows, or at `finish` if there are none, so that frames
    refused while the first are read leave no half of a table on stdout. For ThunderSTORM, `sigma` is the PSF sigma in px and `noise_of` gives a
    background's standard deviation in photons (None: unknown); frames number on across files,
    so that several files make one movie."""

    def __init__(
        self,
        stream: IO[str],
        form: str = "csv",
        pixel_size: float = 100.0,
        columns: tuple[str, ...] = COLUMNS,
        sigma: float | None = None,
        noise_of: Any = None,
    ) -> None:
        if form not in FORMATS:
            raise PixelregError(f"--format must be one of {', '.join(FORMATS)}, got {form!r}")
        self.form, self.pixel_size, self.sigma, self.noise_of = form, pixel_size, sigma, noise_of
        self.columns = columns
        self.stream = stream
        self.count = 0
        self.frames_before = 0  # ThunderSTORM: frames of the files already written
        self._file: tuple[str, int] | None = None  # (path, its frames) of the rows being written
        self.writer = csv.writer(stream, lineterminator="\n")
        self._headed = False

    def finish(self) -> None:
        """The header, if no rows have brought it yet: a table with no localization is a header."""
        if not self._headed:
            self._headed = True
            if self.form == "thunderstorm":
                names = (*THUNDERSTORM_COLUMNS, *(THUNDERSTORM_3D if "z" in self.columns else ()))
                self.stream.write(",".join(f'"{name}"' for name in names) + "\n")
            else:
                self.writer.writerow(self.columns)

    def start_file(self, path: str, frames: int) -> None:
        """Rows of the next file follow; it holds `frames` frames."""
        if self._file is not None:
            self.frames_before += self._file[1]
        self._file = (path, frames)

    def write(self, localizations: Localizations) -> None:
        """The rows of `localizations`, of the file started last."""
        self.finish()
        for row in localizations.rows():
            self.count += 1
            if self.form == "csv":  # lists, not a DictWriter's dicts: a third of the time a row
                self.writer.writerow(
                    ["" if (value := row.get(key)) is None else value for key in self.columns]
                )
            else:
                self.writer.writerow(self._thunderstorm(row))

    def _thunderstorm(self, row: dict[str, Any]) -> list[str]:
        nm = self.pixel_size
        background = row.get("background")
        noise = None if background is None or self.noise_of is None else self.noise_of(background)
        uncertainty = row.get("uncertainty")
        cells = [
            self.count,
            self.frames_before + row["index"] + 1,
            (row["x"] + 0.5) * nm,
            (row["y"] + 0.5) * nm,
            None if self.sigma is None else self.sigma * nm,
            row.get("photons"),
            background,
            noise,
            None if uncertainty is None else uncertainty * nm,
        ]
        if "z" in self.columns:
            cells += [row.get("z"), row.get("uncertainty_z")]
        return [_number(cell) for cell in cells]


def _number(value: Any) -> str:
    """A cell ThunderSTORM parses: integers as such, floats to 0.1 pm, NaN where unknown."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "NaN"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{DECIMALS}f}"


def read_table(path: str | Path, pixel_size: float = 100.0) -> Localizations:
    """A localization table, pixelreg's CSV or ThunderSTORM's (told by its header), in pixels:
    `x`, `y`, `frame` (0-based), `photons`, `uncertainty` (NaN where a row has none), and a 3D
    table's `z` and `uncertainty_z` in nm. A ThunderSTORM table's x and y are in nm: read at
    `pixel_size` nm per pixel."""
    path = require_file(path, "localization table")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:  # -sig: as spreadsheets save
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None:
                raise PixelregError(f"{path} is empty")
            rows = list(reader)
    except UnicodeDecodeError:
        raise PixelregError(f"{path} is not a text CSV table") from None
    except csv.Error as exc:  # a cell over csv's limit of 131,072 characters, a NUL byte
        raise PixelregError(
            f"{path}, row {reader.line_num}: not a localization table's row ({exc})"
        ) from None
    header = [name.strip() for name in header]
    if {"path", "index", "x", "y"} <= set(header):  # pixelreg's (a fixed-count model adds `point`)
        names = {"x": "x", "y": "y", "frame": "index", "photons": "photons", "uncertainty": "uncertainty"}
        names.update({"z": "z", "uncertainty_z": "uncertainty_z"})
        scale, shift, frame_base = 1.0, 0.0, 0
    elif set(THUNDERSTORM_COLUMNS[:4]) <= set(header):
        names = {
            "x": "x [nm]",
            "y": "y [nm]",
            "frame": "frame",
            "photons": "intensity [photon]",
            "uncertainty": "uncertainty [nm]",
            "z": "z [nm]",
            "uncertainty_z": "uncertainty_z [nm]",
        }
        scale, shift, frame_base = 1.0 / pixel_size, 0.5, 1
    else:
        raise PixelregError(
            f"{path} is not a localization table: its header must start path,index,x,y "
            f'(pixelreg predict) or hold "x [nm]","y [nm]","frame" (ThunderSTORM)'
        )
    where = {name: header.index(column) if column in header else None for name, column in names.items()}
    table: dict[str, np.ndarray] = {}
    for name, column in where.items():
        values = np.full(len(rows), np.nan)
        if column is not None:
            for i, row in enumerate(rows):
                try:
                    values[i] = float(row[column]) if column < len(row) and row[column].strip() else math.nan
                except ValueError:
                    raise PixelregError(
                        f"{path}, row {i + 2}: {header[column]} is not a number: {row[column]!r}"
                    ) from None
        table[name] = values
    bad = ~(np.isfinite(table["x"]) & np.isfinite(table["y"]))
    if bad.any():
        raise PixelregError(f"{path}, row {int(np.argmax(bad)) + 2}: every row needs a finite x and y")
    table["frame"] = np.nan_to_num(table["frame"], nan=frame_base) - frame_base
    table["x"], table["y"] = table["x"] * scale - shift, table["y"] * scale - shift
    far = (np.abs(table["x"]) > MOST_COORDINATE) | (np.abs(table["y"]) > MOST_COORDINATE)
    if far.any():
        at = int(np.argmax(far))
        raise PixelregError(
            f"{path}, row {at + 2}: x = {table['x'][at]:.6g}, y = {table['y'][at]:.6g} px lie beyond any "
            f"camera's frame (at most {MOST_COORDINATE:,} px from its corner)"
        )
    table["uncertainty"] = table["uncertainty"] * scale
    kept = [name for name in table if name in ("frame", "x", "y") or where[name] is not None]
    columns = ("path", *(("index" if name == "frame" else name) for name in kept))
    return Localizations.from_fields(str(path), columns, **{name: table[name] for name in kept})
