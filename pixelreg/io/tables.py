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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file, write_together
from pixelreg.io.locs import COLUMNS, DECIMALS, EXTRA_COLUMNS, Localizations

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
FORMATS = ("csv", "thunderstorm")  # of a stream
FILE_FORMATS = (*FORMATS, "picasso")  # of a file
PICASSO_SUFFIXES = (".hdf5", ".h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
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
                names += ("detections",) if "n" in self.columns else ()
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
            None if (sigma := row.get("sigma", self.sigma)) is None else sigma * nm,
            row.get("photons"),
            background,
            noise,
            None if uncertainty is None else uncertainty * nm,
        ]
        if "z" in self.columns:
            cells += [row.get("z"), row.get("uncertainty_z")]
        if "n" in self.columns:
            cells.append(row.get("n"))
        return [_number(cell) for cell in cells]


def _number(value: Any) -> str:
    """A cell ThunderSTORM parses: integers as such, floats to 0.1 pm, NaN where unknown."""
    if _unknown(value):
        return "NaN"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{DECIMALS}f}"


# the fields read from each CSV format: field -> the column names that may hold it, first found wins
PIXELREG_READ: dict[str, tuple[str, ...]] = {
    name: (name,) for name in ("x", "y", "confidence", "photons", "background", "uncertainty")
}
PIXELREG_READ |= {"frame": ("index",), "point": ("point",)} | {name: (name,) for name in EXTRA_COLUMNS}
THUNDERSTORM_READ = {
    "frame": ("frame",),
    "x": ("x [nm]",),
    "y": ("y [nm]",),
    "sigma": ("sigma [nm]", "sigma1 [nm]"),
    "photons": ("intensity [photon]",),
    "background": ("offset [photon]",),
    "uncertainty": ("uncertainty [nm]", "uncertainty_xy [nm]"),
    "z": ("z [nm]",),
    "uncertainty_z": ("uncertainty_z [nm]",),
    "n": ("detections",),
}
TRACKS_READ: dict[str, tuple[str, ...]] = {name: (name,) for name in PIXELREG_READ}
TRACKS_READ["track"] = ("particle",)  # trackpy's name; frame is `frame`, not pixelreg's `index`
TRACKS_COLUMNS = ("frame", "x", "y", "particle")  # first in a tracks table: as trackpy's functions read it
NM_FIELDS = ("x", "y", "sigma", "uncertainty")  # a ThunderSTORM table's lengths in the plane


def table_format(path: str | Path) -> str:
    """The format a table file is in: `picasso` (HDF5, by its signature), else `csv` or
    `thunderstorm` by the CSV's header."""
    path = require_file(path, "localization table")
    with open(path, "rb") as stream:
        if stream.read(8) == HDF5_SIGNATURE:
            return "picasso"
    header = _csv_header(path)
    if {"path", "index", "x", "y"} <= set(header):
        return "csv"
    if set(THUNDERSTORM_COLUMNS[1:4]) <= set(header):
        return "thunderstorm"
    if set(TRACKS_COLUMNS) <= set(header):
        return "tracks"
    raise PixelregError(
        f"{path} is not a localization table: its header must start path,index,x,y "
        f'(pixelreg predict) or hold "x [nm]","y [nm]","frame" (ThunderSTORM), or it is '
        "Picasso's HDF5"
    )


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            header = next(csv.reader(stream), None)
    except (UnicodeDecodeError, csv.Error):
        raise PixelregError(f"{path} is not a text CSV table") from None
    if header is None:
        raise PixelregError(f"{path} is empty")
    return [name.strip() for name in header]


def read_table(path: str | Path, pixel_size: float = 100.0) -> Localizations:
    """A localization table, pixelreg's CSV, ThunderSTORM's CSV or Picasso's HDF5 (told by its
    contents), in pixels with pixel centres on integers (see `pixelreg.io.locs`), frames 0-based:
    every field the table gives, the others NaN (-1). A ThunderSTORM table's lengths are in nm:
    read at `pixel_size` nm per pixel. A pixelreg table of several files numbers their frames on,
    file after file in the order they first appear, as one movie."""
    form = table_format(path)
    path = Path(path)
    if form == "picasso":
        from pixelreg.io.picasso import read_picasso

        table = read_picasso(path)
    else:
        table = _read_csv(path, form, pixel_size)
    far = (np.abs(table["x"]) > MOST_COORDINATE) | (np.abs(table["y"]) > MOST_COORDINATE)
    if far.any():
        at = int(np.argmax(far))
        raise PixelregError(
            f"{path}, row {at + 2}: x = {table['x'][at]:.6g}, y = {table['y'][at]:.6g} px lie beyond any "
            f"camera's frame (at most {MOST_COORDINATE:,} px from its corner)"
        )
    return table


def _read_csv(path: Path, form: str, pixel_size: float) -> Localizations:
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:  # -sig: as spreadsheets save
            reader = csv.reader(stream)
            header = [name.strip() for name in next(reader)]
            rows = list(reader)
    except csv.Error as exc:  # a cell over csv's limit of 131,072 characters, a NUL byte
        raise PixelregError(
            f"{path}, row {reader.line_num}: not a localization table's row ({exc})"
        ) from None
    readers: dict[str, dict[str, tuple[str, ...]]] = {
        "csv": PIXELREG_READ,
        "thunderstorm": THUNDERSTORM_READ,
        "tracks": TRACKS_READ,
    }
    names = readers[form]
    where = {
        name: header.index(found)
        for name, columns in names.items()
        if (found := next((c for c in columns if c in header), None)) is not None
    }
    values: dict[str, np.ndarray] = {}
    for name, column in where.items():
        cells = np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            try:
                cells[i] = float(row[column]) if column < len(row) and row[column].strip() else math.nan
            except ValueError:
                raise PixelregError(
                    f"{path}, row {i + 2}: {header[column]} is not a number: {row[column]!r}"
                ) from None
        values[name] = cells
    bad = ~(np.isfinite(values["x"]) & np.isfinite(values["y"]))
    if bad.any():
        raise PixelregError(f"{path}, row {int(np.argmax(bad)) + 2}: every row needs a finite x and y")
    given = {name: v for name, v in values.items() if name in ("x", "y") or not rows or not np.isnan(v).all()}
    values = given  # a column of no values (ThunderSTORM's NaN sigma) is one the table does not give
    source = str(path)
    if form == "csv":
        frame = np.nan_to_num(values.get("frame", np.zeros(len(rows))), nan=0.0)
        files = [row[header.index("path")] if header.index("path") < len(row) else "" for row in rows]
        values["frame"], source = _frames_on(frame, files, source)
    elif form == "tracks":
        values["frame"] = np.nan_to_num(values["frame"], nan=0.0)
    else:
        values["frame"] = np.nan_to_num(values.get("frame", np.ones(len(rows))), nan=1.0) - 1
        for name in NM_FIELDS:
            if name in values:
                values[name] = values[name] / pixel_size
        values["x"], values["y"] = values["x"] - 0.5, values["y"] - 0.5  # ImageJ's pixel convention
    for name in ("n", "point", "length", "track"):
        if name in values:
            values[name] = np.nan_to_num(values[name], nan=-1.0)
    check_frames(values["frame"], path)
    columns = ("path", *(("index" if name == "frame" else name) for name in values))
    return Localizations.from_fields(source, columns, **values).with_columns()


def check_frames(frame: np.ndarray, path: Path) -> None:
    """Refuse frames that are no frame of a movie: before the first, or not whole numbers."""
    bad = (frame < 0) | (frame != np.floor(frame)) | ~np.isfinite(frame)
    if bad.any():
        at = int(np.argmax(bad))
        raise PixelregError(
            f"{path}, row {at + 2}: frame {frame[at]:g} is no frame of a movie (0-based, whole)"
        )


def _frames_on(frame: np.ndarray, files: list[str], table: str) -> tuple[np.ndarray, str]:
    """Frames numbered on across the files of a pixelreg table (each file's frames after the last
    one the table shows of the file before), and the name of the movie: the one file, or the table."""
    order = list(dict.fromkeys(files))
    if len(order) <= 1:
        return frame, order[0] if order else table
    which = np.array([order.index(name) for name in files])
    first = 0.0
    numbered = frame.copy()
    for i in range(len(order)):
        mine = which == i
        numbered[mine] += first
        first += float(frame[mine].max()) + 1
    return numbered, table


def chosen_format(out: Path, form: str | None, source: str) -> str:
    """The format to write `out` in: `form` if given, else Picasso's for an .hdf5 file, else the
    CSV format the table came in (pixelreg's for a Picasso source)."""
    if form is None:
        form = (
            "picasso"
            if out.suffix.lower() in PICASSO_SUFFIXES
            else ("csv" if source in ("picasso", "tracks") else source)
        )
    if form not in FILE_FORMATS:
        raise PixelregError(f"--format must be one of {', '.join(FILE_FORMATS)}, got {form!r}")
    if (form == "picasso") != (out.suffix.lower() in PICASSO_SUFFIXES):
        raise PixelregError(
            f"{out}: Picasso's tables are .hdf5 files and the CSV formats are not; "
            f"give --out a {'.hdf5' if form == 'picasso' else '.csv'} name"
        )
    return form


def table_writes(
    path: str | Path,
    table: Localizations,
    form: str = "csv",
    pixel_size: float = 100.0,
    shape: tuple[int, int] | None = None,
) -> list[tuple[Path, Callable[[Path], Any]]]:
    """The files of `table` as pixelreg's CSV, ThunderSTORM's (lengths in nm at `pixel_size`) or
    Picasso's HDF5 and YAML (of a movie of `shape`), each a (path, write to a temporary path)
    pair for `write_together`."""
    if form == "picasso":
        from pixelreg.io.picasso import picasso_writes

        return picasso_writes(path, table, pixel_size, shape)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as stream:
            writer = TableWriter(stream, form, pixel_size, table.columns)
            writer.start_file(table.path, int(table["frame"].max(initial=-1)) + 1)
            writer.write(table)
            writer.finish()

    return [(Path(path), write)]


def write_table_file(
    path: str | Path, table: Localizations, form: str = "csv", pixel_size: float = 100.0
) -> Path:
    """`table` written to `path` (and, for Picasso, its YAML beside it) atomically: see `table_writes`."""
    write_together(table_writes(path, table, form, pixel_size))
    return Path(path)


def tracks_writes(path: str | Path, table: Localizations) -> list[tuple[Path, Callable[[Path], Any]]]:
    """A linked table as trackpy's functions read it (`pandas.read_csv` and on to
    `trackpy.imsd`): frame (0-based), x, y (px), particle (the track), then the other fields
    the table gives, as a (path, write to a temporary path) pair for `write_together`."""
    others = [c for c in table.given if c not in ("path", "index", "x", "y", "track", "point")]
    cells = ("index", "x", "y", "track", *others)  # the table's names of TRACKS_COLUMNS, then the rest

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow([*TRACKS_COLUMNS, *others])
            for row in table.rows():
                writer.writerow(["" if _unknown(row[c]) else row[c] for c in cells])

    return [(Path(path), write)]


def _unknown(value: Any) -> bool:
    """Whether a table cell has no value: None, or a number that is not finite."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))
