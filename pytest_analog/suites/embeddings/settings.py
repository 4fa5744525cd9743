"""Settings of the embeddings suite."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_analog.errors import AnalogError


@dataclass(frozen=True)
class Embeddings:
    """Shared token rows sampled for the (un)embedding geometry, and the fewest that are measurable."""

    rows: int
    min_rows: int

    def __post_init__(self):
        if self.rows < self.min_rows:
            raise AnalogError(f"embeddings: rows ({self.rows}) must be at least min_rows ({self.min_rows})")


# Value checks beyond the type (see `config`): dotted key -> (test, what is expected).
CHECKS = {
    "embeddings.rows": (lambda v: 3 <= v <= 65_536, "an integer from 3 to 65,536"),
    "embeddings.min_rows": (lambda v: 3 <= v <= 65_536, "an integer from 3 to 65,536"),
}
