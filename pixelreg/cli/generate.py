"""`pixelreg generate`: render a dataset and write it as .npz."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pixelreg.cli.app import command, console, emit
from pixelreg.cli.options import AsJson, Quiet, make_spec, with_data_options
from pixelreg.io.datasets import save_dataset
from pixelreg.io.files import require_writable_place
from pixelreg.simulate.dataset import make_dataset
from pixelreg.simulate.spec import SPLITS


@command
@with_data_options()
def generate(
    out: Annotated[Path, typer.Option(help="Where to write the dataset (.npz).")] = Path("dataset.npz"),
    quiet: Quiet = False,
    as_json: AsJson = False,
    *,
    spec_options: dict[str, Any],
) -> None:
    """Render a dataset of images with bright points and write it as .npz.

    Example: pixelreg generate --n 1000 --holdout quadrant --out data.npz
    """
    spec = make_spec(spec_options)
    require_writable_place(out)  # refuse a bad --out before the work, not after
    dataset = make_dataset(spec)
    path = save_dataset(out, dataset)
    counts = {name: int((dataset.split == name).sum()) for name in SPLITS}
    if not quiet:
        console.print(
            f"Wrote {len(dataset)} images of {spec.height}x{spec.width} to {path} "
            f"(train {counts['train']}, val {counts['val']}, test {counts['test']}; holdout {spec.holdout})"
        )
    emit({"path": str(path), "counts": counts, "spec": spec.to_dict()} if as_json else str(path), as_json)
