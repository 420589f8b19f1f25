"""Keep the localizations whose fields lie in given ranges, and count what each range drops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.locs import Localizations

# field -> what a range on it is called where it is reported
CRITERIA = {
    "photons": "photons",
    "uncertainty": "uncertainty (px)",
    "confidence": "confidence",
    "frame": "frames",
    "x": "region x (px)",
    "y": "region y (px)",
}


@dataclass(frozen=True)
class Filtered:
    """The rows kept, and for each range (by field, in the order given) the rows it drops that
    the ranges before it kept."""

    table: Localizations
    dropped: dict[str, int]
    total: int


def filter_table(table: Localizations, ranges: dict[str, tuple[float, float]]) -> Filtered:
    """The rows of `table` whose every field named in `ranges` lies in its closed range (LO, HI);
    a row without a value there (NaN) is dropped. A range on a field the table does not give is
    an error: it would drop every row, which is never what was meant."""
    keep = np.ones(len(table), bool)
    dropped: dict[str, int] = {}
    for name, (low, high) in ranges.items():
        if name not in CRITERIA:
            raise PixelregError(f"cannot filter by {name!r}; by one of {', '.join(CRITERIA)}")
        column = "index" if name == "frame" else name
        if column not in table.given:
            raise PixelregError(f"the table has no {name} column to filter by")
        if low > high:
            raise PixelregError(f"the {CRITERIA[name]} range {low:g}:{high:g} is empty (LO above HI)")
        values = table[name]
        inside = (values >= low) & (values <= high)  # NaN: outside every range
        dropped[name] = int((keep & ~inside).sum())
        keep &= inside
    return Filtered(table.select(keep), dropped, len(table))
