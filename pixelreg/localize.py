"""Localization, as `pixelreg predict` runs it: a checkpoint and image files in, a table out.

`Localizer.load` reads a model and sets how it reads (threshold, mirror images, arithmetic,
camera). `Localizer.localize` is the pipeline, one verb a stage, each living in its subpackage:

    read (io.frames) -> detect: background, network, readout (nn.inference) ->
    refine: threshold and joint fits (nn.inference, fit.deblend) ->
    photometry (evaluate.photometry, fit.photometry) -> table (io.locs)

`write_table` runs it over every file and writes each localization as a row of pixelreg's CSV
or ThunderSTORM's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from pixelreg.evaluate.photometry import measured
from pixelreg.io.checkpoint_header import ModelHeader, check_data_kind
from pixelreg.io.checkpoints import load_model
from pixelreg.io.files import atomic_path
from pixelreg.io.frames import Frames, open_frames
from pixelreg.io.locs import COLUMNS, COLUMNS_3D, LOCS_DTYPE, Localizations
from pixelreg.io.tables import TableWriter
from pixelreg.nn.architectures import PointModel
from pixelreg.nn.inference import (
    can_count,
    check_frames,
    detect_images,
    kept_detections,
    photometry_spec,
    predict_images,
    resolve_device,
    set_precision,
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
        ModelHeader.read(checkpoint).check_settings(threshold, mirror, precision, camera, device)
        torch_device = resolve_device(device)
        model, payload = load_model(checkpoint, torch_device)
        if camera and model.camera is not None:
            model.camera = dataclasses.replace(model.camera, **camera)
        if threshold is not None:
            model.threshold = threshold
        if mirror is not None:
            model.mirror = mirror
        set_precision(model, precision, torch_device)
        spec = DataSpec.from_dict(payload["data_spec"]) if payload.get("data_spec") else None
        return cls(model, spec, torch_device)

    def open(self, paths: list[Path]) -> list[Frames]:
        """The files' frames, every file checked against the model before any is read."""
        movies = [open_frames(path, counts=self.model.camera is not None) for path in paths]
        self.check(movies)
        return movies

    def check(self, movies: list[Frames]) -> None:
        """Refuse, before any is read, frames that the model cannot take (`check_frames`)."""
        for movie in movies:
            check_data_kind(self.model.camera is not None, movie.counts, str(movie.path))
            check_frames(self.model, movie)

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns for this model: COLUMNS, with `point` after `index` for a model
        of a fixed number of several points an image, and `z`, `uncertainty_z` for a 3D model."""
        if self.model.points > 1 and not can_count(self.model):
            return (*COLUMNS[:2], "point", *COLUMNS[2:])
        return COLUMNS_3D if getattr(self.model, "z_range", None) else COLUMNS

    def localize(
        self,
        frames: Frames,
        done: Callable[[int], None] = lambda count: None,
        seconds: dict[str, float] | None = None,
    ) -> Iterator[Localizations]:
        """The localizations of a file's frames, a batch of frames at a time; `done(count)` is
        told of each batch finished, and `seconds` (where given) of the time each stage took."""
        model, counting = self.model, can_count(self.model)
        camera_spec = photometry_spec(model, self.spec)
        check_frames(model, frames)
        clock = stage_clock({} if seconds is None else seconds)
        for first, images in frames.batches():
            clock("read")
            confidence = None
            if counting:
                found, confidence = detect_images(model, images, self.device)
                clock("detect")
                points, confidence = kept_detections(model, images, found, confidence)
                clock("refine")
            else:
                points = predict_images(model, images, self.device)
                clock("detect")
            depth = points[..., 2] if points.shape[-1] > 2 else None  # a 3D model's, nm
            worth = (
                None
                if camera_spec is None
                else measured(camera_spec.camera.photons(images), points[..., :2], camera_spec, depth)
            )
            clock("photometry")
            yield table(str(frames.path), first, points, confidence, worth, self.columns)
            done(len(images))
            clock("rest")  # the caller's, between batches: writing, progress

    def rows(
        self, frames: Frames, done: Callable[[int], None] = lambda count: None
    ) -> Iterator[dict[str, Any]]:
        """The localizations of a file's frames as rows (`Localizations.rows`), as `--json` prints them."""
        for localizations in self.localize(frames, done):
            yield from localizations.rows()

    def write_table(
        self,
        movies: list[Frames],
        stream: IO[str],
        table_format: str = "csv",
        pixel_size: float = 100.0,
        done: Callable[[int], None] = lambda count: None,
        source: Callable[[int, Frames], Iterable[Localizations]] | None = None,
    ) -> int:
        """Every localization of `movies` written to `stream`; how many there were. `source(i,
        movie)` gives the i-th movie's localizations where they were found elsewhere (chunks
        localized by workers); by default they are localized here."""
        camera = self.model.camera
        sigma = self.spec.equivalent_sigma if self.spec is not None and self.spec.mean_blur > 0 else None
        noise_of = None if camera is None else camera.background_std
        writer = TableWriter(stream, table_format, pixel_size, self.columns, sigma, noise_of)
        self.check(movies)
        for index, movie in enumerate(movies):
            writer.start_file(str(movie.path), movie.count)
            found = self.localize(movie, done) if source is None else source(index, movie)
            for localizations in found:
                writer.write(localizations)
                stream.flush()  # a reader that stops early (`| head`) stops the work early
        writer.finish()
        return writer.count


def whole_table(
    localizer: Localizer,
    movies: list[Frames],
    done: Callable[[int], None],
    source: Callable[[int, Frames], Iterable[Localizations]] | None = None,
) -> Localizations:
    """Every localization of `movies` in one table, their frames numbered on as one movie (for a
    file format that is written whole, Picasso's), with the PSF's sigma where the model knows it;
    `source` as `Localizer.write_table` takes it."""
    parts, first = [], 0
    given: tuple[str, ...] = ("path",)
    for index, movie in enumerate(movies):
        found = localizer.localize(movie, done) if source is None else source(index, movie)
        for localizations in found:
            localizations.locs["frame"] += first
            parts.append(localizations.locs)
            given = localizations.given  # the same for every batch: what the model outputs
        first += movie.count
    spec = localizer.spec
    locs = np.concatenate(parts) if parts else np.zeros(0, LOCS_DTYPE)
    path = str(movies[0].path) if len(movies) == 1 else "several movies"
    table = Localizations(path, locs, localizer.columns, given)
    if spec is not None and spec.mean_blur > 0:
        locs["sigma"] = spec.equivalent_sigma
        table = table.with_columns("sigma")
    return table


def table(
    path: str,
    first: int,
    points: np.ndarray,
    confidence: np.ndarray | None,
    worth: dict[str, np.ndarray] | None,
    columns: tuple[str, ...],
) -> Localizations:
    """The localizations of a batch of frames, the first of them frame `first` of its file:
    every found point (N, K, 2), frame by frame and in each in its points' order, with its
    confidence and photometry where the model gives them; a 3D model's points (N, K, 4) hold
    the depth and its expected error (nm) after x and y."""
    frame, point = np.nonzero(np.isfinite(points[..., 0]))
    values = {"frame": first + frame, "x": points[frame, point, 0], "y": points[frame, point, 1]}
    if "z" in columns:
        values["z"], values["uncertainty_z"] = points[frame, point, 2], points[frame, point, 3]
    if "point" in columns:
        values["point"] = point
    if confidence is not None:
        values["confidence"] = confidence[frame, point]
    if worth is not None:
        for key in ("photons", "background", "uncertainty"):
            values[key] = worth[key][frame, point]
    return Localizations.from_fields(path, columns, **values)


def stage_clock(seconds: dict[str, float]) -> Callable[[str], None]:
    """`clock(stage)`: the time since the clock's last call (or its making) added to
    `seconds[stage]`."""
    last = time.perf_counter()

    def clock(stage: str) -> None:
        nonlocal last
        now = time.perf_counter()
        seconds[stage] = seconds.get(stage, 0.0) + now - last
        last = now

    return clock


def write_file(
    localizer: Localizer,
    movies: list[Frames],
    out: Path,
    table_format: str,
    pixel_size: float,
    done: Callable[[int], None] = lambda count: None,
    source: Callable[[int, Frames], Iterable[Localizations]] | None = None,
) -> int:
    """The table of `movies` written to `out` in `table_format` (atomically: Picasso's HDF5 and
    YAML together); `source` as `Localizer.write_table` takes it. The rows written."""

    if table_format == "picasso":
        from pixelreg.io.files import write_together
        from pixelreg.io.tables import table_writes

        whole = whole_table(localizer, movies, done, source)
        shape = (max(m.height for m in movies), max(m.width for m in movies))
        write_together(table_writes(out, whole, "picasso", pixel_size, shape))
        return len(whole)
    # surrogateescape: a file name that is not UTF-8 goes into the table as its bytes
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as stream,
    ):
        return localizer.write_table(movies, stream, table_format, pixel_size, done, source)
