"""The gate's memory estimate, checked before any model loads.

The config's counts set the size of the gate's largest arrays: bootstrap draws
of ``chance.resamples`` replicates over every prompt, the permutation null's
prompt orders, Gram matrices of the prompts and of the sampled token rows, the
layer-matrix sample, the embedding rows' cosine matrices, the streamed
per-layer statistics and the steering bootstrap. Their sum is a lower bound of what a run needs beyond the models
themselves; a run whose bound exceeds the memory available is refused in one
line instead of being killed by the kernel part way through.
"""

from __future__ import annotations

import os
from pathlib import Path

_FLOAT = 8  # bytes of a float64 or int64 entry


def gate_memory(config, *, prompts: int, widths: tuple[int, int], gated_layers: int, runs: set[str]) -> dict[str, int]:
    """The gate's largest arrays, in bytes, by what sets their size (a config key).

    Args:
        config: the effective `config.Config`.
        prompts: prompts the representation run reads (after ``prompts.max_prompts``).
        widths: (teacher, analog) hidden sizes.
        gated_layers: gated teacher layers (one streamed statistic each).
        runs: the runs this session performs (`runs.Run` names, as `registry.runs` keys them).

    Returns:
        ``{config key: bytes}``; empty when no run of size is requested.
    """
    width = max(widths)
    sizes: dict[str, int] = {}
    resamples = config.chance.resamples
    if "representation" in runs:
        # counts and weights [B + 1, P] per bootstrap, and a replicate of every metric of every layer
        sizes["chance.resamples"] = 2 * (resamples + 1) * (prompts + 1) * _FLOAT + resamples * 6 * gated_layers * _FLOAT
        # the permutation null's prompt orders [K, P], and each layer's null values
        sizes["chance.permutations"] = config.chance.permutations * (prompts + 6 * gated_layers) * _FLOAT
        if resamples:
            sizes["chance.rows"] = 3 * config.chance.rows**2 * _FLOAT  # teacher, analog and control Gram matrices
        sizes["prompts.max_prompts"] = 3 * prompts**2 * _FLOAT  # RBF CKA and mutual kNN over prompts
        sizes["layers.matrix_rows"] = 2 * config.layers.matrix_rows**2 * _FLOAT
        sizes["embeddings.rows"] = 2 * config.embeddings.rows**2 * _FLOAT  # pairwise cosines of each model's rows
        sizes["layers.teacher"] = 4 * gated_layers * width**2 * _FLOAT  # streamed cross sums, analog and control
    if "steering" in runs:
        s = config.steering
        sizes["steering.random_directions"] = (resamples + 1) * s.random_directions * _FLOAT + s.random_directions * width * _FLOAT
        sizes["steering.eval_items"] = 2 * (resamples + 1) * s.eval_items * _FLOAT
    return sizes


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
