"""Progress on stderr: a live bar on a terminal, plain occasional lines in logs, nothing with --quiet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pixelreg.cli.app import console


class ConsoleReporter:
    """Training progress on stderr: a live bar on a terminal, one plain line per epoch always."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: Any = None
        self.epochs = 0

    def start(self, run_dir: Path, model: str, first_epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        if self.quiet:
            return
        console.print(
            f"Training the {model} model into {run_dir} (epochs {first_epoch}..{epochs}, {batches} batches each)"
        )
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True,
            )  # fmt: skip
            total = batches * (epochs - first_epoch + 1)
            self.task = self.progress.add_task("train", total=total, epoch=first_epoch, epochs=epochs)
            self.progress.start()

    def batch(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def epoch(self, row: dict[str, float], best: bool) -> None:
        if self.progress is not None:
            self.progress.update(self.task, epoch=min(int(row["epoch"]) + 1, self.epochs))
        if not self.quiet:
            counted = (
                f"val_jaccard {row['val_jaccard']:.4f} (threshold {row['threshold']:.2f}, "
                f"merge radius {row['merge_radius']:g} px)  "
                if "val_jaccard" in row
                else ""
            ) + (f"val_rmse_z {row['val_rmse_z_nm']:.1f} nm  " if "val_rmse_z_nm" in row else "")
            console.print(
                f"epoch {int(row['epoch']):>3}/{self.epochs}  train_loss {row['train_loss']:.3e}  "
                f"val_loss {row['val_loss']:.3e}  {counted}val_mean_px {row['val_mean_px']:.4f}  "
                f"{row['seconds']:.1f}s" + ("  best" if best else "")
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class FrameProgress:
    """Frames done, on stderr: a live bar on a terminal; otherwise, for a job of more than a few
    seconds, a plain line every tenth of the work, at most every LINE_SECONDS, and at the end;
    nothing with --quiet."""

    LINE_SECONDS = 5.0

    def __init__(self, total: int, quiet: bool, unit: str = "frames") -> None:
        self.total, self.quiet, self.done, self.shown, self.unit = total, quiet, 0, 0, unit
        self.started = self.last_line = time.perf_counter()
        self.progress: Progress | None = None

    def __enter__(self) -> FrameProgress:
        if not self.quiet and console.is_terminal:
            self.progress = Progress(
                TextColumn(self.unit), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[rate]}"), console=console, transient=True,
                redirect_stdout=False, redirect_stderr=False,  # stdout carries the table, never the bar's
            )  # fmt: skip
            self.task = self.progress.add_task(self.unit, total=self.total, rate="")
            self.progress.start()
        return self

    def __call__(self, count: int) -> None:
        self.done += count
        rate = f"{self.done / max(time.perf_counter() - self.started, 1e-9):.1f} {self.unit}/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, rate=rate)
        elif not self.quiet:
            now = time.perf_counter()
            due = self.done - self.shown >= self.total / 10 and now - self.last_line >= self.LINE_SECONDS
            if due or (self.done == self.total and self.shown > 0):
                self.shown, self.last_line = self.done, now
                console.print(f"{self.unit} {self.done:,}/{self.total:,} ({rate})")

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
