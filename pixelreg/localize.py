"""Localization, as `pixelreg predict` runs it: a checkpoint and image files in, a table out.

`Localizer.load` reads a model and sets how it reads (threshold, mirror images, arithmetic,
camera); `write_table` runs it over every file, a chunk of frames at a time, and writes each
localization as a row of pixelreg's CSV or ThunderSTORM's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pixelreg.errors import PixelregError
from pixelreg.io.checkpoints import load_model
from pixelreg.io.frames import Frames, open_frames
from pixelreg.io.tables import TableWriter
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.inference import (
    can_count,
    check_frames,
    localize_frames,
    resolve_device,
    set_precision,
    table_columns,
)
from pixelreg.simulate.spec import DataSpec


@dataclass
class Localizer:
    """A trained model ready to read frames: on its device, with its training data's spec."""

    model: PointModel
    spec: DataSpec | None
    device: Any

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        device: str = "auto",
        threshold: float | None = None,
        mirror: bool | None = None,
        precision: str = "auto",
        camera: dict[str, float] | None = None,
    ) -> Localizer:
        """The model of `checkpoint`, set to keep detections of `threshold` confidence or more,
        to read each frame with its mirror images or once, in `precision` arithmetic, and to
        read ADU with the `camera` values given (baseline, e_per_adu, em_gain); None keeps
        what the model was trained and validated with."""
        torch_device = resolve_device(device)
        model, payload = load_model(checkpoint, torch_device)
        if camera:
            if model.camera is None:
                verb = "applies" if len(camera) == 1 else "apply"
                raise PixelregError(
                    f"{', '.join(camera)} {verb} to a model trained on camera images (--photons); "
                    "this one reads grey levels",
                    tuple(camera),
                )
            model.camera = dataclasses.replace(model.camera, **camera)
        if threshold is not None:
            if not can_count(model):
                raise PixelregError(
                    f"threshold applies to a model that counts (trained with --points LO:HI); this "
                    f"{model.name} model returns {model.points} point(s) per image",
                    ("threshold",),
                )
            model.threshold = threshold
        if mirror is not None:
            if not hasattr(model, "mirror"):
                raise PixelregError(
                    f"mirror/--no-mirror apply to the offsets model; this is a {model.name} model",
                    ("mirror",),
                )
            model.mirror = mirror
        set_precision(model, precision, torch_device)
        spec = DataSpec.from_dict(payload["data_spec"]) if payload.get("data_spec") else None
        return cls(model, spec, torch_device)

    def open(self, paths: list[Path]) -> list[Frames]:
        """The files' frames, every file checked against the model before any is read."""
        movies = [open_frames(path, counts=self.model.camera is not None) for path in paths]
        for movie in movies:
            check_frames(self.model, movie)
        return movies

    def rows(
        self, frames: Frames, done: Callable[[int], None] = lambda count: None
    ) -> Iterator[dict[str, Any]]:
        """One row per localization in `frames` (columns as `table_columns` says)."""
        return localize_frames(self.model, frames, self.device, self.spec, done)

    def write_table(
        self,
        movies: list[Frames],
        stream: IO[str],
        table_format: str = "csv",
        pixel_size: float = 100.0,
        done: Callable[[int], None] = lambda count: None,
    ) -> int:
        """Every localization of `movies` written to `stream`; how many there were."""
        camera = self.model.camera
        sigma = self.spec.mean_blur if self.spec is not None and self.spec.mean_blur > 0 else None
        noise_of = None if camera is None else camera.background_std
        table = TableWriter(stream, table_format, pixel_size, table_columns(self.model), sigma, noise_of)
        for movie in movies:
            table.start_file(str(movie.path), movie.count)
            table.write(self.rows(movie, done))
        return table.count
