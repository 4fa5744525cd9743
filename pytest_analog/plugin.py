"""The pytest plugin: hooks and fixtures only; the work is in `session.AnalogSession`.

Importing this module is light: torch, transformers and lm-eval load only when
a fixture or a built-in suite needs a model.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest

from pytest_analog.options import add_options
from pytest_analog.criterion import MEASURED_FIELDS, Criterion, Gate, Measured
from pytest_analog.session import WORKER_OUTPUT, AnalogSession

session_key = pytest.StashKey[AnalogSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    session = AnalogSession(config)
    config.stash[session_key] = session
    config.pluginmanager.register(session, "analog_session")  # its pytest_runtest_logreport
    if session.enabled and session.settings.suites:
        config.args.append(str(session.suites_dir))


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None and config.pluginmanager.is_registered(session):
        config.pluginmanager.unregister(session)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    session = config.stash[session_key]
    if session.is_suite(collection_path) and not session.wants_suite(collection_path):
        return True
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """Collect the built-in suites even where ``python_files`` would not match them."""
    session = parent.config.stash[session_key]
    if session.is_suite(file_path) and not any(fnmatch(file_path.name, p) for p in parent.config.getini("python_files")):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    analog = session.config.stash[session_key]
    if analog.enabled:
        analog.check_models()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``teacher_layer`` runs once per gated teacher layer, ``benchmark_task`` once per lm-eval task."""
    if "teacher_layer" in metafunc.fixturenames:
        layers = metafunc.config.stash[session_key].teacher_layers()
        metafunc.parametrize("teacher_layer", layers, ids=[f"teacher_layer={i}" for i in layers])
    if "benchmark_task" in metafunc.fixturenames:
        tasks = metafunc.config.stash[session_key].benchmark_tasks()
        metafunc.parametrize("benchmark_task", tasks, ids=tasks)


def pytest_itemcollected(item: pytest.Item) -> None:
    item.config.stash[session_key].note_collected(item)


def pytest_deselected(items) -> None:
    if items:
        items[0].config.stash[session_key].note_deselected(items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    analog = session.config.stash.get(session_key, None)
    if analog is not None and analog.is_worker:
        session.config.workeroutput[WORKER_OUTPUT] = analog.worker_output(getattr(session, "items", []))
    elif analog is not None:
        analog.finish(session)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist: a worker finished; merge its criteria and measurements into the controller's session."""
    analog = node.config.stash.get(session_key, None)
    if analog is not None:
        analog.merge_worker(node.gateway.id, getattr(node, "workeroutput", {}).get(WORKER_OUTPUT), error)


def pytest_terminal_summary(terminalreporter) -> None:
    analog = terminalreporter.config.stash.get(session_key, None)
    if analog is not None:
        analog.display(terminalreporter)


@pytest.fixture(scope="session")
def analog_session(pytestconfig: pytest.Config) -> AnalogSession:
    """The plugin's state for this run: settings, fidelity config (``analog_config``), models, criteria."""
    return pytestconfig.stash[session_key]


@pytest.fixture(scope="session")
def analog_config(analog_session):
    """The effective fidelity `Config` (shipped defaults overlaid by --analog-config)."""
    return analog_session.analog_config


@pytest.fixture(scope="session")
def analog_pair(analog_session):
    """The loaded teacher and analog (`ModelPair`); skips the test when no models were given, fails it when
    the run gates against a teacher reference (no teacher model)."""
    return analog_session.pair()


@pytest.fixture(scope="session")
def teacher(analog_pair):
    """The loaded teacher (`LoadedModel`: ``.model``, ``.tokenizer``, ``.info``)."""
    return analog_pair.teacher


@pytest.fixture(scope="session")
def analog(analog_session):
    """The loaded analog (`LoadedModel`: ``.model``, ``.tokenizer``, ``.info``); needs no teacher."""
    return analog_session.analog_model()


@pytest.fixture(scope="session")
def analog_measurements(analog_session):
    """Every representation metric of the pair (`representation.Measurements`), measured once per session."""
    return analog_session.run("representation")


@pytest.fixture(scope="session")
def analog_benchmarks(analog_session):
    """Per-task lm-eval scores of both models and their paired deltas (plain dicts), run once per session."""
    return analog_session.run("benchmarks")


class Recorder:
    """The ``fidelity_record`` fixture: records one criterion of the calling test in the report."""

    def __init__(self, request: pytest.FixtureRequest, session: AnalogSession):
        self._request, self._session = request, session

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
        """Record a built-in metric under the gate the config sets for it (`config.Gates.gate`), the one
        the leaderboard checks a bundle against."""
        measured = value if isinstance(value, Measured) else Measured(value)
        return self._record(metric, measured, self._session.analog_config.gates.gate(metric, measured.value, **details), details)

    def _record(self, metric: str, measured: Measured, gate: Gate, details: dict) -> Criterion:
        node = self._request.node
        suite = node.module.__name__.rpartition(".")[2].removeprefix("test_")
        criterion = Criterion(f"{suite}::{node.name}", suite, metric, measured, gate, details)
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


@pytest.fixture
def fidelity_record(request: pytest.FixtureRequest, analog_session) -> Recorder:
    """Record a criterion in the fidelity report; fails the test when a gated one fails.

    Call it once per test as ``fidelity_record(metric, value, min=..., max=..., **details)``;
    without ``min`` or ``max`` the value is reported but never fails. ``rule`` (the decision
    rule, `criterion.judge`) defaults to the config's ``gates.rule``.
    ``fidelity_record.configured(metric, value, **details)`` gates a built-in metric as the config does.
    """
    return Recorder(request, analog_session)


@pytest.fixture(scope="session")
def distill_config(analog_session):
    """Settings of `distilled_analog`: `DistillConfig` defaults for --analog-teacher (override this fixture to change them)."""
    from pytest_analog.distill import DistillConfig

    settings = analog_session.settings
    if settings.teacher is None:
        pytest.skip("no --analog-teacher given: distilled_analog distils from the teacher")
    return DistillConfig(
        teacher=str(settings.teacher), device=settings.device,
        trust_remote_code=settings.trust_remote_code, allow_pickle=settings.allow_pickle,
    )


@pytest.fixture(scope="session")
def distilled_analog(analog_session, distill_config, tmp_path_factory):
    """Folder of an analog distilled from the teacher by `distill_config`: cached by the teacher's
    file hash and the settings, so a session (and later sessions with the cache) distils once."""
    from pytest_analog.distill import distilled

    cache_dir = analog_session.cache_dir or tmp_path_factory.mktemp("analog")
    with analog_session.showing_progress():
        return analog_session.guarded(distilled, distill_config, cache_dir)


@pytest.fixture(scope="session")
def steering_vector(analog_session):
    """``steering_vector(behaviour, layer, model="teacher")``: a steering vector [d] (float64), extracted once.

    ``behaviour`` is a shipped set name or a .jsonl path; ``layer`` is hidden_states[layer];
    ``model`` is "teacher" or "analog". Settings come from the config's ``steering`` section.
    """
    return analog_session.steering_vector


@pytest.fixture(scope="session")
def steering_map(analog_session):
    """``steering_map(teacher_layer, analog_layer=None, kind=None)``: a fitted map from analog to teacher activations.

    Fitted once per arguments on the prompt set; ``analog_layer`` defaults to the CKA best match,
    ``kind`` to ``steering.map`` (ridge, procrustes or autoencoder). Call it on [n, d_analog] activations.
    """
    return analog_session.steering_map
