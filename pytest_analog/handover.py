"""The pytest-xdist hand-over: what a worker gives the controller, and how the controller takes it in."""

from __future__ import annotations

import json

from pytest_analog.criterion import Criterion
from pytest_analog.reference import store
from pytest_analog.runs import Outcome

WORKER_OUTPUT = "pytest_analog"  # key of a worker's state in pytest-xdist's ``workeroutput``


def worker_output(session, items) -> str:
    """What an xdist worker hands the controller (JSON): its criteria with their tests' collection
    indices, the payloads of its runs, failure, model records and the reference it read."""
    order = {item.nodeid: i for i, item in enumerate(items)}
    state = {
        "criteria": [[order.get(session.nodeids.get(c.id), len(order)), c.to_dict()] for c in session.criteria],
        "runs": {name: {"payload": done.payload, "cached": done.cached} for name, done in session.outcomes.items()},
        "failure": session.failure,
        "models": session.models_info(),
        "reference": reference_manifest(session),
        "deselected": session.deselected,
        "suites": sorted(session.suites_seen),
    }
    return json.dumps(state, default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value))


class Merger:
    """The controller's side: each worker's state taken in once, criteria kept in collection order."""

    def __init__(self, session):
        self.session = session
        self.merged: set[str] = set()
        self.collected: list[tuple[int, Criterion]] = []

    def merge(self, worker: str, output: str | None, error: object = None) -> None:
        """Take in a worker's `worker_output`; a worker that went down without one fails the run and makes it partial."""
        session = self.session
        if worker in self.merged:
            return
        self.merged.add(worker)
        if output is None:
            session.workers_down.append(worker)
            session.failure = session.failure or (
                f"pytest-xdist worker {worker} went down ({error or 'no output'}); the criteria it measured are missing"
            )
            return
        state = json.loads(output)
        self.collected += [(index, Criterion.from_dict(row)) for index, row in state["criteria"]]
        self.collected.sort(key=lambda pair: pair[0])  # collection order, as a serial run records them
        session.criteria = [criterion for _, criterion in self.collected]
        for name, done in state["runs"].items():
            if name not in session.outcomes:
                session.outcomes[name] = Outcome(done["payload"], done["cached"], session.runs[name].result(done["payload"]))
        session.failure = session.failure or state["failure"]
        session.merged_models = session.merged_models or state["models"]
        if state["reference"]:
            session.merged_references.append(state["reference"])
        session.deselected = max(session.deselected, state["deselected"])  # every worker collects the same tests
        session.suites_seen.update(state["suites"])


def reference_manifest(session) -> dict | None:
    """The manifest of the teacher reference this run read (its parts, merged over xdist workers), or None."""
    half = session.teacher_half
    if half is not None and not half.live:
        return half.given.manifest
    own = [half.manifest()] if half is not None and half.parts else []
    manifests = own + session.merged_references
    return store.merged(manifests) if manifests else None
