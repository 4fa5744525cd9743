"""An on-disk cache of measurements that never trusts a file it cannot verify.

Each entry is a JSON file named by its key, holding the key again and a SHA-256
of its payload; a file that is truncated, edited, or written for another key is
ignored (and later overwritten), never read as a result.

A cache speeds a gate up and never stops one: a write that fails (disk full,
no permission) is skipped with one `CacheWarning`, and the rest of the run
writes nothing more (`write`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

from pytest_analog.atomic import write_atomic
from pytest_analog.errors import AnalogWarning

FORMAT = "pytest-analog-cache/1"
_writing = {"on": True}  # off once a write failed in this run (`begin_run` turns it on again)


class CacheWarning(AnalogWarning):
    """A cache write failed; the run goes on without writing to the cache."""


def begin_run() -> None:
    """Turn cache writes on for a new run (a failed write turned them off in an earlier one)."""
    _writing["on"] = True


def write(fn: Callable[..., Any], *args: Any) -> bool:
    """Call ``fn(*args)``, a write into the cache; True when it wrote, False when it failed or was skipped
    because an earlier write of this run failed.

    The first ``OSError`` (disk full, no permission, read-only file system) warns
    once (`CacheWarning`) and turns later writes off: the run still reads what the
    cache holds and measures the rest.
    """
    if not _writing["on"]:
        return False
    try:
        fn(*args)
        return True
    except OSError as exc:
        _writing["on"] = False
        where = f" ({exc.filename})" if exc.filename else ""
        warnings.warn(CacheWarning(
            f"the cache cannot be written: {exc.strerror or exc}{where}; this run goes on without writing to it"
        ), stacklevel=2)
        return False


def cache_key(**parts: Any) -> str:
    """A stable key over JSON-able parts (model hashes, prompt-set hash, dtype, layer set, ...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def canonical(payload: Any) -> Any:
    """``payload`` as JSON reads it back: string object keys, lists for tuples and numpy arrays, plain numbers."""
    return json.loads(json.dumps(payload, default=_numpy))


def _numpy(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"a cached payload holds a {type(value).__name__}, which JSON cannot hold")


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(directory: Path, key: str) -> Any | None:
    """The payload stored under ``key``, or None when absent, corrupted or foreign."""
    path = Path(directory) / f"{key}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["format"] == FORMAT and entry["key"] == key and entry["sha256"] == _digest(entry["payload"]):
            return entry["payload"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def store(directory: Path, key: str, payload: Any) -> Path | None:
    """Write ``payload`` under ``key`` atomically; None when the cache cannot be written (`write`)."""
    path = Path(directory) / f"{key}.json"
    payload = canonical(payload)  # what load() will see
    entry = {"format": FORMAT, "key": key, "sha256": _digest(payload), "payload": payload}
    return path if write(write_atomic, path, json.dumps(entry)) else None
