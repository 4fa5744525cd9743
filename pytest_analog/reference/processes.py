"""The processes of ``accelerate launch``: a teacher half's batches split over them, merged exactly.

Under ``accelerate launch`` (``WORLD_SIZE`` > 1) each process runs every
``count``-th batch and the results are gathered into batch order on every
process, so each batch is computed exactly as one process computes it (the
same prompts padded together) and the merged part is the one-process part.
Without it, one process runs every batch and nothing is initialised.
"""

from __future__ import annotations

import os
from typing import Any


def processes(device: str = "cpu") -> tuple[int, int]:
    """(this process's index, the number of processes); ``device`` "cpu" joins them over gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return state.process_index, state.num_processes


def share(n: int, device: str = "cpu") -> list[int]:
    """The batch indices of ``range(n)`` this process runs."""
    index, count = processes(device)
    return list(range(index, n, count))


def gathered(results: dict[int, Any], device: str = "cpu") -> list[Any]:
    """Every process's ``{batch index: result}``, as one list in batch order (on every process)."""
    if processes(device)[1] == 1:
        return [results[i] for i in sorted(results)]
    from accelerate.utils import gather_object

    merged = dict(pair for pair in gather_object(list(results.items())))
    return [merged[i] for i in sorted(merged)]


def is_main(device: str = "cpu") -> bool:
    """True on the process that writes (the only one without ``accelerate launch``)."""
    return processes(device)[0] == 0


def wait(device: str = "cpu") -> None:
    """Wait until every process gets here (nothing without ``accelerate launch``)."""
    if processes(device)[1] > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
