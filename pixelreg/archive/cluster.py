"""Chunks run where the user says: in this process, on a local Dask cluster of `workers`
processes, or on an existing cluster at a scheduler's address (`dask scheduler` with workers
on other machines, or one started by dask-jobqueue on SLURM).

Each chunk is one Dask task (`work.localize_chunk`): a worker loads the model once and keeps
it for every chunk it is given; a worker that dies has its chunk redone elsewhere (Dask's
retries); each task reports who did it and how long each stage took, for the closing report.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pixelreg.archive.work import Chunk, Settings, localize_chunk
from pixelreg.errors import PixelregError

RETRIES = 3  # times a chunk is tried again after its worker died or it failed
CONNECT_SECONDS = 20  # waiting for a scheduler to answer
STAGES = ("load", "read", "detect", "refine", "photometry", "write")


@dataclass
class Report:
    """What the chunks took: frames and busy seconds per worker, seconds per stage, the wall
    time of the whole run, and the workers it had."""

    wall: float = 0.0
    workers: int = 1
    frames: dict[str, int] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, done: dict[str, Any]) -> None:
        who = done["worker"]
        self.frames[who] = self.frames.get(who, 0) + done["frames"]
        self.busy[who] = self.busy.get(who, 0.0) + done["task_seconds"]
        for stage, seconds in done["seconds"].items():
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def as_dict(self) -> dict[str, Any]:
        """The report as `predict`'s closing table and `bench movie` give it: frames/s per worker (over its
        busy time) and in all (over the wall time), and where the workers' time went; `waiting`
        is the workers' time outside any task (start-up, scheduling, the network)."""
        total = sum(self.frames.values())
        accounted = sum(self.busy.values())
        stages = {stage: round(self.stages.get(stage, 0.0), 2) for stage in STAGES}
        stages["other"] = round(accounted - sum(self.stages.get(s, 0.0) for s in STAGES), 2)
        stages["waiting"] = round(max(0.0, self.workers * self.wall - accounted), 2)
        return {
            "frames": total,
            "seconds": round(self.wall, 2),
            "frames_per_second": round(total / self.wall, 2) if self.wall else None,
            "workers": {
                who: {
                    "frames": self.frames[who],
                    "busy_seconds": round(self.busy[who], 2),
                    "frames_per_second": round(self.frames[who] / self.busy[who], 2)
                    if self.busy[who]
                    else None,
                }
                for who in sorted(self.frames)
            },
            "stage_seconds": stages,
        }


def run_chunks(
    settings: Settings,
    chunks: list[Chunk],
    folder: str,
    done: Callable[[Chunk], None],
    workers: int | None = None,
    scheduler: str | None = None,
) -> Report:
    """Every chunk localized into `folder`: here (neither `workers` nor `scheduler`), on a local
    cluster of `workers` processes, or on the cluster at `scheduler`; `done(chunk)` is told of
    each chunk finished. Ctrl-C (KeyboardInterrupt) stops the run and leaves the finished
    chunks in place."""
    started = time.perf_counter()
    report = Report()
    if not chunks:  # all finished before: no cluster to start
        return report
    if workers is None and scheduler is None:
        for chunk in chunks:
            report.add(localize_chunk(settings, chunk, folder))
            done(chunk)
        report.wall = time.perf_counter() - started
        return report
    with _client(workers, scheduler) as client:
        report.workers = max(1, len(client.scheduler_info()["workers"]))
        run = uuid.uuid4().hex[:12]  # task names of their own: other runs may share the cluster
        futures = {
            client.submit(
                localize_chunk, settings, chunk, folder, key=f"pixelreg-{run}-{chunk.name}", retries=RETRIES
            ): chunk
            for chunk in chunks
        }
        from distributed import as_completed

        try:
            for future in as_completed(futures):
                report.add(future.result())
                done(futures[future])
        finally:
            client.cancel(list(futures))
        report.workers = max(report.workers, len(report.frames))
    report.wall = time.perf_counter() - started
    return report


class _client:
    """A Dask client of a new local cluster (`workers` processes that take one chunk at a time,
    torch using this machine's cores shared out among them) or of the scheduler at
    `scheduler`; closed, with its cluster, on leaving."""

    def __init__(self, workers: int | None, scheduler: str | None) -> None:
        self.workers, self.scheduler = workers, scheduler
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        import logging

        from distributed import Client, LocalCluster

        logging.getLogger("distributed").setLevel(logging.ERROR)  # a restarted worker is no news
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_SECONDS)
            except (OSError, ValueError, TimeoutError) as exc:
                raise PixelregError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
            try:
                self.client.wait_for_workers(1, timeout=CONNECT_SECONDS)
            except TimeoutError:
                self.client.close()
                raise PixelregError(
                    f"the Dask scheduler at {self.scheduler} has no worker (none joined in {CONNECT_SECONDS} s)"
                ) from None
            return self.client
        if self.workers is not None and self.workers < 1:
            raise PixelregError(f"--workers must be 1 or more, got {self.workers}")
        cores = os.cpu_count() or 1
        try:
            with _sigint_held():  # the workers inherit it blocked: Ctrl-C is this process's to handle
                self.cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,  # one chunk at a time ...
                    processes=True,
                    dashboard_address=None,
                    env={
                        "OMP_NUM_THREADS": str(max(1, cores // (self.workers or 1))),  # ... on its cores
                        "DASK_LOGGING__DISTRIBUTED": "error",  # a restarted worker is no news
                    },
                )
            self.client = Client(self.cluster)
        except BaseException:  # Ctrl-C while the cluster started: close what there is
            self.__exit__()
            raise
        return self.client

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked while worker processes are started, which inherit the mask: a terminal's
    Ctrl-C reaches the whole foreground process group, and each worker would print its own
    KeyboardInterrupt; this process stops them in order instead. A Ctrl-C meanwhile waits, and
    arrives here when the block ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
