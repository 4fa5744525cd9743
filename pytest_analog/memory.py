"""The memory a gate may use, and the one-line refusal of a config that needs more.

The config's counts set the size of the gate's largest arrays; each run states
them (`runs.Run.memory`: bootstrap draws over every prompt, the permutation
null's prompt orders, Gram matrices, streamed per-layer statistics, the steering
bootstrap). Their sum is a lower bound of what a run needs beyond the models
themselves; a run whose bound exceeds the memory available is refused in one
line before any model loads, instead of being killed by the kernel part way through.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 limit; None when unknown."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available


def memory_problem(sizes: dict[str, int], available: int | None) -> str | None:
    """Why a run of these array ``sizes`` cannot fit in ``available`` bytes (one line), or None when it can."""
    need = sum(sizes.values())
    if available is None or need <= available:
        return None
    key = max(sizes, key=sizes.get)
    return (
        f"this config needs at least {_gib(need)} of memory beyond the models ({key} alone {_gib(sizes[key])}), "
        f"more than the {_gib(available)} available; lower {key}"
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
