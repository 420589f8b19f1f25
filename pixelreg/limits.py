"""How much memory a job would take, checked before it starts instead of failing half-way."""

from __future__ import annotations

import os
from pathlib import Path

from pixelreg.errors import PixelregError

HEADROOM = 0.8  # refuse a job that would take more than this share of the memory available


def available_bytes() -> int | None:
    """Memory this process can still take: the least of the machine's and its cgroup's limit."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            candidates.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None  # not knowable here: do not refuse on a guess
    return max(0, min(candidates))


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def require_memory(need: float, what: str, hint: str) -> None:
    """Refuse `what` with a clear error when `need` bytes cannot fit in the memory available."""
    available = available_bytes()
    if available is not None and need > HEADROOM * available:
        raise PixelregError(
            f"{what} needs about {human_bytes(need)} of memory, and {human_bytes(available)} "
            f"are available; {hint}"
        )
