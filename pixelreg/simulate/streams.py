"""Random streams: the one place where random generators are keyed, so a seed gives the same bytes."""

from __future__ import annotations

import numpy as np

from pixelreg.simulate.spec import SPLITS

# --- the one place where random streams are keyed -----------------------------------------

STREAMS = {"positions": 0, "noise": 1, "batch order": 2, "every position": 3}


def random_stream(seed: int, purpose: str, split: str | None = None, epoch: int = 0, step: int = 0):
    """The generator for one purpose, keyed by (seed, purpose, split, epoch, step).

    Streams of different keys are independent, and the same key always gives the same
    stream: the noise of a split is the same whether `generate` renders it to a file or
    `train` renders it in memory, and a resumed run draws what an uninterrupted one drew.
    A dataset's own rendering uses epoch 0; training epochs count from 1. Trailing zero
    keys are dropped, so the positions stream is the seed's own `default_rng(seed)`.
    """
    key = [seed, STREAMS[purpose], 0 if split is None else 1 + SPLITS.index(split), epoch, step]
    while len(key) > 1 and key[-1] == 0:
        key.pop()
    return np.random.default_rng(key)
