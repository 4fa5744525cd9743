"""An on-disk cache of measurements that never trusts a file it cannot verify.

Each entry is a JSON file named by its key, holding the key again and a SHA-256
of its payload; a file that is truncated, edited, or written for another key is
ignored (and later overwritten), never read as a result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pytest_analog.atomic import write_atomic

FORMAT = "pytest-analog-cache/1"


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


def store(directory: Path, key: str, payload: Any) -> Path:
    """Write ``payload`` under ``key`` atomically."""
    path = Path(directory) / f"{key}.json"
    payload = canonical(payload)  # what load() will see
    entry = {"format": FORMAT, "key": key, "sha256": _digest(payload), "payload": payload}
    write_atomic(path, json.dumps(entry))
    return path
