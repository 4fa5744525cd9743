"""Settings of the logits suite."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Logits:
    """What a teacher reference keeps of each next-token distribution."""

    top_k: int


# Value checks beyond the type (see `config`): dotted key -> (test, what is expected).
CHECKS = {
    "logits.top_k": (lambda v: 1 <= v <= 65_536, "an integer from 1 to 65,536"),
}
