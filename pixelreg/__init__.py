"""pixelreg: train neural networks to locate bright points in images, and measure them honestly."""

__version__ = "0.1.0"

from .data import Dataset, DataSpec, from_normalized, load_dataset, make_dataset, to_normalized  # noqa: E402
from .errors import PixelregError  # noqa: E402

__all__ = [
    "DataSpec",
    "Dataset",
    "PixelregError",
    "__version__",
    "from_normalized",
    "load_dataset",
    "make_dataset",
    "to_normalized",
]
