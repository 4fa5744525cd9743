"""The ``fidelity_record`` fixture's object: records one criterion of the calling test in the report."""

from __future__ import annotations

import pytest

from pytest_analog.criterion import MEASURED_FIELDS, Criterion, Gate, Measured


class Recorder:
    """Records one criterion of the calling test; fails the test when a gated one fails."""

    def __init__(self, request: pytest.FixtureRequest, session, suite: str):
        self._request, self._session, self._suite = request, session, suite

    def __call__(self, metric: str, value, *, gate: Gate | None = None, min: float | None = None,
                 max: float | None = None, score: str = "raw", rule: str | None = None, **details) -> Criterion:
        """Record ``value`` (a number or a `Measured`) under ``metric``; fail the test when a gated one fails.

        The gate is ``gate``, or ``min`` / ``max`` (at most one; neither: reported, never failed)
        on the ``score`` ("raw" or "corrected"), judged by ``rule`` (default: the config's
        ``gates.rule``). With a number, `Measured`'s other fields (``chance``, ``interval``,
        ``reason``, ...) may be given as keywords; the remaining ``details`` go into the report's row.
        """
        if not isinstance(value, Measured):
            value = Measured(value, **{k: details.pop(k) for k in MEASURED_FIELDS if k in details})
        if gate is None:
            if min is not None and max is not None:
                pytest.fail(f"fidelity_record({metric!r}): give min or max, not both", pytrace=False)
            direction = "min" if min is not None else "max" if max is not None else None
            try:
                gate = Gate(direction, min if min is not None else max, score, rule or self._session.analog_config.gates.rule)
            except ValueError as exc:
                pytest.fail(f"fidelity_record({metric!r}): {exc}", pytrace=False)
        return self._record(metric, value, gate, details)

    def configured(self, metric: str, value, **details) -> Criterion:
        """Record a suite's metric under the gate the config sets for it (``gates.<metric>``), the one
        the leaderboard checks a bundle against."""
        measured = value if isinstance(value, Measured) else Measured(value)
        gates = self._session.analog_config.gates
        if not hasattr(gates, gates.judged_under.get(metric, metric)):
            pytest.fail(f"fidelity_record.configured({metric!r}): the config has no gates.{metric}; "
                        "a suite that records it names its gate (Suite.gates)", pytrace=False)
        return self._record(metric, measured, gates.gate(metric, measured.value, **details), details)

    def _record(self, metric: str, measured: Measured, gate: Gate, details: dict) -> Criterion:
        node = self._request.node
        facts = self._session.metrics.get(metric)
        criterion = Criterion(f"{self._suite}::{node.name}", self._suite, metric, measured, gate, details, facts=facts)
        if any(c.id == criterion.id for c in self._session.criteria):
            pytest.fail(
                f"fidelity_record was called twice in {node.name}; record one criterion per test (parametrize the test for more)",
                pytrace=False,
            )
        self._session.add(criterion, node.nodeid)
        row = criterion.to_dict()
        node.user_properties.extend((f"analog_{key}", row[key]) for key in ("metric", "value", "threshold", "passed"))
        if gate.gated and not criterion.passed:
            pytest.fail(criterion.message, pytrace=False)
        return criterion
