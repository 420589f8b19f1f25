"""The run directory: the name of every file in it, how runs are named, and history.csv.

```
runs/NAME/
  config.json  history.csv  best.pt  last.pt     written by train
  metrics.json  predictions.npz                  written by evaluate
  figures/*.png                                  written by plot
```
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from pathlib import Path

from pixelreg.errors import PixelregError
from pixelreg.io.files import write_text
from pixelreg.io.schema import describe

HISTORY_FIELDS = (
    "epoch", "train_loss", "val_loss", "val_mean_px", "val_exact", "val_jaccard", "threshold",
    "merge_radius", "val_rmse_z_nm", "lr", "seconds",
)  # fmt: skip
DEFAULT_RUN_NAME = "train"


class RunDir:
    """The paths of one run directory: the one place that names its files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.history = self.root / "history.csv"
        self.best = self.root / "best.pt"
        self.last = self.root / "last.pt"
        self.metrics = self.root / "metrics.json"
        self.predictions = self.root / "predictions.npz"
        self.figures = self.root / "figures"

    def forget_evaluation(self) -> None:
        """Remove metrics, predictions and figures: they describe a best.pt about to change."""
        for path in (self.metrics, self.predictions):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.figures, ignore_errors=True)

    def require_trained(self) -> RunDir:
        """This run, if it is a directory that `train` wrote; else a clear PixelregError."""
        if not self.root.is_dir():
            raise PixelregError(f"run directory not found: {self.root}")
        if not self.history.is_file():
            raise PixelregError(
                f"{self.root} has no {self.history.name}; pass a directory made by `pixelreg train`"
            )
        return self


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint file or a run directory (meaning its best.pt, else its last.pt)."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for candidate in (run.best, run.last):
            if candidate.is_file():
                return candidate
        raise PixelregError(
            f"{path} is a directory without {run.best.name} or {run.last.name}; pass a checkpoint file"
        )
    return path


def last_checkpoint_of(path: str | Path) -> Path:
    """The checkpoint that resumes a run: a last.pt, or a run directory meaning its last.pt."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).last
    if path.name == RunDir(path.parent).best.name:
        raise PixelregError(f"{path} is the best epoch, not the last; resume from {RunDir(path.parent).last}")
    return path


def check_run_name(name: str) -> None:
    """A run name is one folder name inside --out: not empty, no separators, not . or .."""
    if not name.strip():
        raise PixelregError("--name must not be empty; leave it out to get train, train2, ...")
    if "/" in name or os.sep in name or not name.isprintable() or name in (".", ".."):
        raise PixelregError(
            f"--name must be one folder name inside --out, without '/' and not . or ..; got {name!r}"
        )


def next_run_dir(out: str | Path, name: str | None, exist_ok: bool = False) -> Path:
    """The run directory to use: `name`, or with no name the first free of train, train2, ..."""
    out = Path(out)
    if name is not None:
        check_run_name(name)
        run_dir = out / name
        if run_dir.exists() and not exist_ok:
            raise PixelregError(
                f"run directory {run_dir} already exists; choose another --name, pass "
                "--exist-ok to write into it, or --resume its last.pt"
            )
        return run_dir
    run_dir, number = out / DEFAULT_RUN_NAME, 1
    while run_dir.exists():
        number += 1
        run_dir = out / f"{DEFAULT_RUN_NAME}{number}"
    return run_dir


def write_history(path: str | Path, history: list[dict[str, float]]) -> None:
    """history.csv: one row per finished epoch, the columns of HISTORY_FIELDS that its rows have
    (val_exact for a fixed count of points; val_jaccard, threshold and merge_radius for a
    counting model)."""
    columns = [key for key in HISTORY_FIELDS if any(key in row for row in history)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in columns})
    write_text(path, buffer.getvalue())


def read_history(path: str | Path) -> dict[str, list[float]]:
    """history.csv as columns of finite numbers; a missing, empty or malformed file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise PixelregError(f"{path} not found; is this a run directory made by `pixelreg train`?")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PixelregError(f"{path} is not a readable history ({str(exc).splitlines()[0]})") from None
    if not rows:
        raise PixelregError(f"{path} has no epochs yet")
    optional = (
        "val_exact",
        "val_jaccard",
        "threshold",
        "merge_radius",
        "val_rmse_z_nm",
    )  # by the kind of model
    needed = [key for key in HISTORY_FIELDS if key not in optional]
    missing = [key for key in needed if key not in rows[0]]
    if missing:
        raise PixelregError(f"{path} lacks the column(s) {', '.join(missing)}")
    columns: dict[str, list[float]] = {key: [] for key in HISTORY_FIELDS if key in rows[0]}
    for line, row in enumerate(rows, start=2):
        for key in columns:
            try:
                value = float(row[key])
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise PixelregError(
                    f"{path}, line {line}: {key} is {describe(row[key])}, not a finite number"
                )
            columns[key].append(value)
    return columns
