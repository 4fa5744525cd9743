"""The part format: what the teacher contributes to one run, as a teacher reference stores it.

A `Part` is tensors (one safetensors file) and JSON data (one JSON file), with
the key it was built from. Every suite's teacher half returns one and its
analog half reads one; `reference.store` keeps them in a folder with a manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Part:
    """What the teacher contributes to one run: tensors, JSON data and the key it was built from."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    key: dict[str, Any] = field(default_factory=dict)  # the settings and inputs it read; checked on use

    def files(self, name: str) -> dict[str, bytes]:
        """The part's files by name inside a reference folder."""
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in sorted(self.tensors.items())}
        return {f"{name}.safetensors": save(tensors), f"{name}.json": canonical(self.meta)}


def part_problem(tensors: dict[str, torch.Tensor], meta: Any) -> str | None:
    """What every part must be, whatever its run: JSON data that is an object, floating tensors all finite."""
    if not isinstance(meta, dict):
        return f"data is {kind(meta)}, not a JSON object"
    for name, tensor in sorted(tensors.items()):
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            return f"tensor {name} holds NaN or infinite values"
    return None


def canonical(value: Any) -> bytes:
    """JSON bytes that are the same for equal data (sorted keys; arrays as lists)."""
    return json.dumps(value, sort_keys=True, indent=1, default=_plain).encode()


def kind(value: Any) -> str:
    """What a JSON value is, for a refusal: "missing" or "a JSON <type>"."""
    return "missing" if value is None else f"a JSON {type(value).__name__}"


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a reference's JSON holds a {type(value).__name__}")
