"""Settings and gates of the benchmarks suite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pytest_analog.criterion import Gate
from pytest_analog.errors import AnalogError
from pytest_analog.gates import AtLeast, Rule


@dataclass(frozen=True)
class Benchmarks:
    """lm-eval tasks run on both models (the gate on each task is `Gates.benchmarks`)."""

    tasks: list[str]
    num_fewshot: int | None
    limit: int | None
    batch_size: int
    backend: Literal["hf", "vllm"]  # lm-eval's model of the teacher half: transformers (hf) or vLLM


@dataclass(frozen=True)
class BenchmarkGates:
    """The gate on each lm-eval task's retained capability, or on its paired delta."""

    min_retained: float | None
    max_drop: float | None
    rule: Rule | None
    per_task: dict[str, dict[str, float | None]]

    def __post_init__(self):
        for task, gate in self.per_task.items():
            unknown = set(gate) - {"min_retained", "max_drop"}
            if unknown:
                raise AnalogError(f"gates.benchmarks.per_task.{task}: unknown key(s) {', '.join(sorted(unknown))}; use min_retained or max_drop")
        for task in ["", *self.per_task]:
            retained, drop = self.thresholds(task or None)
            if retained is not None and drop is not None:
                where = f"gates.benchmarks.per_task.{task}" if task else "gates.benchmarks"
                raise AnalogError(f"{where}: give min_retained or max_drop, not both (set the other to null)")

    def thresholds(self, task: str | None) -> tuple[float | None, float | None]:
        """(min_retained, max_drop) for ``task``: its per_task entry (a key left out is null), else the defaults."""
        own = self.per_task.get(task) if task else None
        if own is None:
            return self.min_retained, self.max_drop
        return own.get("min_retained"), own.get("max_drop")

    def gate(self, metric: str, value: Any, details: dict[str, Any], rule: str) -> Gate:
        """A task's retained fraction is gated by ``min_retained`` (not without a value: the teacher is not
        above chance), its paired delta by ``max_drop``, on the side its metric's direction says."""
        retained, drop = self.thresholds(details.get("task"))
        rule = self.rule or rule
        if metric == "benchmark_delta" and drop is not None:
            return Gate("min", -drop, rule=rule) if details.get("higher_is_better", True) else Gate("max", drop, rule=rule)
        if metric == "benchmark_retained" and drop is None and retained is not None and value is not None:
            return Gate("min", retained, rule=rule)
        return Gate(rule=rule)

    ungated = AtLeast.ungated


# Value checks beyond the type (see `config`): dotted key -> (test, what is expected).
CHECKS = {
    "benchmarks.tasks": (lambda v: 1 <= len(v) <= 1_000, "a list of 1 to 1,000 task names or task YAML paths"),
    "benchmarks.num_fewshot": (lambda v: v is None or 0 <= v <= 100, "null or an integer from 0 to 100"),
    "benchmarks.limit": (lambda v: v is None or 1 <= v <= 10_000_000, "null or an integer from 1 to 10,000,000"),
    "benchmarks.batch_size": (lambda v: 1 <= v <= 4_096, "an integer from 1 to 4,096"),
    "gates.benchmarks.min_retained": (lambda v: v is None or v <= 1, "null or a number <= 1"),
    "gates.benchmarks.max_drop": (lambda v: v is None or v >= 0, "null or a number >= 0"),
}
