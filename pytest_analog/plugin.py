"""The pytest plugin: hooks and fixtures only; the work is in `session.AnalogSession`.

Each suite's tests are collected from its module (`suite.Suite.tests`) wherever it
lies: a built-in suite's from the installed package, a conftest's from the
conftest itself. Its fixtures module (`suite.Suite.plugin`) is registered here.
"""

from __future__ import annotations

import importlib
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

from pytest_analog import finish, hookspec
from pytest_analog.layers import gated_layers
from pytest_analog.lazy import Lazy, module_file
from pytest_analog.handover import WORKER_OUTPUT, Merger, worker_output
from pytest_analog.options import add_options
from pytest_analog.preflight import check_inputs
from pytest_analog.recorder import Recorder
from pytest_analog.session import AnalogSession
from pytest_analog.suite import Suite

DistillConfig, distilled = Lazy("pytest_analog.distill:DistillConfig"), Lazy("pytest_analog.distill:distilled")
session_key = pytest.StashKey[AnalogSession]()
_merger_key = pytest.StashKey[Merger]()
_added_key = pytest.StashKey[dict]()  # a suite folder the plugin added to the arguments -> the suite modules in it


class SuiteModule(pytest.Module):
    """A suite's test module, imported by its module name (a conftest's is the conftest itself, already imported)."""

    suite: Suite

    def _getobj(self):
        name = self.suite.tests
        return sys.modules.get(name) or importlib.import_module(name)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    session = AnalogSession(config)
    config.stash[session_key] = session
    config.stash[_merger_key] = Merger(session)
    config.stash[_added_key] = {}
    config.pluginmanager.register(session, "analog_session")  # its pytest_runtest_logreport
    for suite in session.suites:
        if suite.plugin and not config.pluginmanager.has_plugin(suite.plugin):
            config.pluginmanager.register(importlib.import_module(suite.plugin), suite.plugin)
    # each wanted suite's folder, in name order, unless a path given holds it: its node ids are "test_x.py::...";
    # only the suite's module is collected there (`pytest_ignore_collect`)
    given, added = [Path(arg.split("::")[0]).resolve() for arg in config.args], config.stash[_added_key]
    wanted = session.wanted()
    for path, suite in sorted(_suite_files(session).items(), key=lambda item: item[1].name):
        if suite in wanted and not any(path == arg or arg in path.parents for arg in given) and not _ignored(config, path):
            if path.parent not in added:
                config.args.append(str(path.parent))
            added.setdefault(path.parent, set()).add(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None and config.pluginmanager.is_registered(session):
        config.pluginmanager.unregister(session)


def _ignored(config: pytest.Config, path: Path) -> bool:
    """--ignore or --ignore-glob names the file (pytest applies them only to what it finds in folders)."""
    ignored = [Path(p).resolve() for p in config.getoption("ignore") or []]
    return any(i == path or i in path.parents for i in ignored) or any(
        fnmatch(str(path), pattern) for pattern in config.getoption("ignore_glob") or [])


def _suite_files(session: AnalogSession) -> dict[Path, Suite]:
    """Each suite by the file of its test module (found without importing it), once per session."""
    return session.once("suite files", lambda: {module_file(suite.tests): suite for suite in session.suites})


def _suite_at(config: pytest.Config, path: Path) -> Suite | None:
    """The suite whose test module is the file at ``path``, or None."""
    return _suite_files(config.stash[session_key]).get(path.resolve())


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """An unwanted suite's module; in a folder the plugin added, anything but its suite modules."""
    suite = _suite_at(config, collection_path)
    if suite is not None and suite not in config.stash[session_key].wanted():
        return True
    kept = config.stash[_added_key].get(collection_path.parent)
    if kept is not None and collection_path.resolve() not in kept:
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector):
    """A suite's test module that ``python_files`` matches (``test_*.py``): collected as the suite's."""
    suite = _suite_at(parent.config, module_path)
    return _suite_module(parent, module_path, suite) if suite is not None else None


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """A suite's test module that pytest's own collection skips (a conftest.py, or a name ``python_files`` does not
    match, found in a folder): collected as the suite's. pytest collects the others (`pytest_pycollect_makemodule`)."""
    suite = _suite_at(parent.config, file_path)
    patterns = parent.config.getini("python_files")
    if suite is None or parent.session.isinitpath(file_path) or any(fnmatch(file_path.name, p) for p in patterns):
        return None
    return _suite_module(parent, file_path, suite)


def _suite_module(parent: pytest.Collector, path: Path, suite: Suite) -> SuiteModule:
    module = SuiteModule.from_parent(parent, path=path)
    module.suite = suite
    return module


def pytest_sessionstart(session: pytest.Session) -> None:
    analog = session.config.stash[session_key]
    if analog.enabled:
        with analog.checking():
            check_inputs(analog)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``teacher_layer`` runs once per gated teacher layer."""
    if "teacher_layer" in metafunc.fixturenames:
        session = metafunc.config.stash[session_key]
        layers = gated_layers(session.analog_config, session.depths[0]) if session.depths else []
        metafunc.parametrize("teacher_layer", layers, ids=[f"teacher_layer={i}" for i in layers])


def pytest_itemcollected(item: pytest.Item) -> None:
    module = item.getparent(SuiteModule)
    if module is not None:  # a requested suite with no collected test makes the run partial
        item.config.stash[session_key].suites_seen.add(module.suite.name)


def pytest_deselected(items) -> None:
    """Deselected tests that record criteria: without them the report covers part of the gate."""
    if items:
        items[0].config.stash[session_key].deselected += sum("fidelity_record" in getattr(item, "fixturenames", ()) for item in items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    analog = session.config.stash.get(session_key, None)
    if analog is not None and analog.is_worker:
        session.config.workeroutput[WORKER_OUTPUT] = worker_output(analog, getattr(session, "items", []))
    elif analog is not None:
        finish.finish(analog, session)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist: a worker finished; merge its criteria and measurements into the controller's session."""
    merger = node.config.stash.get(_merger_key, None)
    if merger is not None:
        merger.merge(node.gateway.id, getattr(node, "workeroutput", {}).get(WORKER_OUTPUT), error)


def pytest_terminal_summary(terminalreporter) -> None:
    analog = terminalreporter.config.stash.get(session_key, None)
    if analog is not None:
        finish.display(analog, terminalreporter)


@pytest.fixture(scope="session")
def analog_session(pytestconfig: pytest.Config) -> AnalogSession:
    """The plugin's state for this run: settings, suites, fidelity config (``analog_config``), models, criteria."""
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


@pytest.fixture
def fidelity_record(request: pytest.FixtureRequest, analog_session) -> Recorder:
    """Record a criterion in the fidelity report; fails the test when a gated one fails.

    Call it once per test as ``fidelity_record(metric, value, min=..., max=..., **details)``;
    without ``min`` or ``max`` the value is reported but never fails. ``rule`` (the decision
    rule, `criterion.judge`) defaults to the config's ``gates.rule``.
    ``fidelity_record.configured(metric, value, **details)`` gates a suite's metric as the config does.
    The criterion's suite is the test's suite, or for another test its module's name without ``test_``.
    """
    module = request.node.getparent(SuiteModule)
    suite = module.suite.name if module is not None else request.node.module.__name__.rpartition(".")[2].removeprefix("test_")
    return Recorder(request, analog_session, suite)


@pytest.fixture(scope="session")
def distill_config(analog_session):
    """Settings of `distilled_analog`: `DistillConfig` defaults for --analog-teacher (override this fixture to change them)."""
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
    cache_dir = analog_session.cache_dir or tmp_path_factory.mktemp("analog")
    with analog_session.showing_progress():
        return analog_session.guarded(distilled, distill_config, cache_dir)


