"""pixelreg: train neural networks to locate bright points in images, and measure them honestly."""

from typing import Any

__version__ = "0.1.0"

# Imported on first use, so that `pixelreg --version` and every refusal start in a blink.
_EXPORTS = {
    "DataSpec": "simulate.spec",
    "Dataset": "simulate.dataset",
    "from_normalized": "simulate.coords",
    "load_dataset": "io.datasets",
    "make_dataset": "simulate.dataset",
    "save_dataset": "io.datasets",
    "to_normalized": "simulate.coords",
    "PixelregError": "errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pixelreg' has no attribute {name!r}")
