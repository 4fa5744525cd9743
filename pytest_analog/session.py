"""The state of one pytest run with the plugin: settings, suites, models, runs and criteria.

`plugin` holds only hooks and fixtures; they hand every piece of work to the
`AnalogSession` created in ``pytest_configure``. What is checked before any
test is in `preflight`, the xdist hand-over in `handover`, and what a run
leaves (report, bundle, exit code, summary) in `finish`.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import pytest

from pytest_analog import __version__, cache, registry
from pytest_analog.config import load_config
from pytest_analog.criterion import Criterion
from pytest_analog.errors import AnalogError
from pytest_analog.finish import withdraw
from pytest_analog.models import ModelPair, load_model, resolve_device, resolve_dtype, sha256_files
from pytest_analog.options import SettingsError, read_settings
from pytest_analog.reference import store
from pytest_analog.runs import Context, Outcome
from pytest_analog.versions import package_version


class AnalogSession(Context):
    """Settings, suites, config, models, runs and criteria of one pytest run."""

    def __init__(self, config: pytest.Config):
        self.pytest_config = config
        # a pytest-xdist worker measures and hands its state to the controller, which alone writes
        self.is_worker = hasattr(config, "workerinput")
        cache.begin_run()
        try:
            self.suites = registry.gathered(config.hook.pytest_analog_suites())
        except AnalogError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.runs, self.metrics = registry.runs(self.suites), registry.metrics(self.suites)
        try:
            self.settings = read_settings(config, [suite.name for suite in self.suites])
        except SettingsError as exc:
            self.settings = exc.settings
            withdraw(self)
            raise
        overrides = {}
        if self.settings.max_prompts:  # a quick run: also at most that many items per benchmark task
            overrides.update({"prompts.max_prompts": self.settings.max_prompts, "benchmarks.limit": self.settings.max_prompts})
        if self.settings.tasks:
            overrides["benchmarks.tasks"] = list(self.settings.tasks)
        with self.checking():
            self.analog_config = load_config(self.settings.config, self.suites, **overrides)
        self.criteria: list[Criterion] = []
        self.nodeids: dict[str, str] = {}  # criterion id -> id of the test that recorded it
        self.deselected = 0  # deselected tests that record criteria (-k, -m, --lf, --deselect, --sw)
        self.suites_seen: set[str] = set()  # suites with a collected test (merged over xdist workers)
        self.recording_tests: set[str] = set()  # tests whose reports carry a recorded criterion (controller)
        self.workers_down: list[str] = []  # xdist workers that went down without handing over their state
        self.merged_models: dict | None = None  # model records from an xdist worker that loaded the models
        self.merged_references: list[dict] = []  # the reference manifests of xdist workers' teacher parts
        self.model_sources: tuple = ()  # (teacher, analog) `ModelSource`, resolved before collection; teacher None with a reference
        self.teacher_half = None  # `reference.teacher.TeacherHalf`: each run's teacher part, set before collection
        self.depths: tuple[int, int] | None = None  # (teacher, analog) number of blocks, read before collection
        self.outcomes: dict[str, Outcome] = {}  # the cached runs performed (`run`), by name
        self.failure: str | None = None  # why every later test fails (`guarded`)
        self.partial: str | None = None  # why this run's report covers only part of the criteria (`finish`)
        self.unwritten: str | None = None  # why the report or bundle could not be written (one line)
        self.submitted: Path | None = None  # the bundle --analog-submit wrote
        self._analog = None

    @property
    def enabled(self) -> bool:
        """True when the command line or ini names an analog and its teacher or the teacher's reference."""
        return self.settings.student is not None

    @property
    def verbose(self) -> bool:
        """-vv: lm-eval's warnings and progress bars are shown."""
        return self.pytest_config.get_verbosity() >= 2

    @functools.cached_property
    def cache_dir(self) -> Path | None:
        """Where measurements and file hashes are cached; created on first use only."""
        if self.settings.cache:
            return self.settings.cache
        cache_plugin = getattr(self.pytest_config, "cache", None)
        return Path(cache_plugin.mkdir("analog")) if cache_plugin is not None else None

    def wanted(self) -> list:
        """The suites --analog-suites asks for (none without models)."""
        return [suite for suite in self.suites if self.enabled and suite.name in self.settings.suites]

    # -- models ---------------------------------------------------------------------------

    def sources(self) -> tuple:
        """The resolved (teacher, analog) `ModelSource` (teacher None with a reference); skips the test without models."""
        self.require()
        return self.model_sources

    def pair(self) -> ModelPair:
        """The loaded teacher and analog, each loaded once per session (not with a teacher reference)."""
        self.require()
        if not self.teacher_half.live:
            pytest.fail("this test needs the teacher model, but this run gates against a teacher reference "
                        "(--analog-reference); give --analog-teacher to run it", pytrace=False)
        return ModelPair(self.guarded(self.teacher_half.model), self.analog_model())

    def analog_model(self):
        """The loaded analog, loaded once per session."""
        if self._analog is None:
            self.require()
            self._analog = self.load(self.model_sources[1])
        return self._analog

    def load(self, source):
        """A model of this run's device and dtype, its progress shown."""
        s = self.settings
        with self.showing_progress():
            return self.guarded(load_model, source, device=s.device, dtype=s.dtype, trust_remote_code=s.trust_remote_code,
                                allow_pickle=s.allow_pickle, cache_dir=self.cache_dir)

    def pair_for(self, name: str) -> ModelPair:
        """The pair run ``name``'s analog half computes on: the loaded analog and the teacher's stand-in (its
        tokenizer and record); the loaded teacher itself only for a run that needs it, in a live gate."""
        half = self.teacher_half
        teacher = half.model() if self.runs[name].needs_teacher and half.live else half.stand_in()
        return ModelPair(teacher, self.analog_model())

    def model_records(self) -> dict[str, Any]:
        """Both models' records (the teacher's from its reference or the loaded teacher), loading only the analog."""
        self.require()
        return {"teacher": self.guarded(self.teacher_half.record), "analog": self.analog_model().info}

    def models_info(self) -> dict | None:
        """Both models' records as far as this run has them (from a run, the loaded analog or an xdist worker)."""
        measured = [done.result.models for done in self.outcomes.values() if hasattr(done.result, "models")]
        if measured:  # a run whose result holds them (from the cache, with no model loaded)
            return measured[0]
        if self._analog:
            return {"teacher": self.teacher_half.record(), "analog": self._analog.info}
        return self.merged_models

    # -- runs -----------------------------------------------------------------------------

    def run(self, name: str):
        """The result of the cached run ``name``, performed once per session: read from the cache under its
        key, else computed (models loaded, progress shown) and stored."""
        if name not in self.outcomes:
            self.require()
            spec = self.runs[name]
            part = self.part(name)
            inputs = self.guarded(spec.analog_inputs, self)
            key = self._cache_key(name, inputs.key) if self.cache_dir else None  # hashes the analog's files
            payload = cache.load(self.cache_dir / name, key) if key else None
            cached = payload is not None
            if not cached:
                pair = self.pair_for(name)
                with self.showing_progress():
                    payload = cache.canonical(self.guarded(spec.compute, pair, part, self.analog_config, **inputs.args))
                if key:
                    cache.store(self.cache_dir / name, key, payload)
            self.outcomes[name] = Outcome(payload, cached, self.guarded(spec.result, payload))
        return self.outcomes[name].result

    def part(self, name: str):
        """The teacher's `Part` of run ``name``: from the reference, the cache or the teacher (`TeacherHalf`)."""
        self.require()
        with self.showing_progress():
            return self.guarded(self.teacher_half.part, self.runs[name])

    def _cache_key(self, name: str, inputs: dict) -> str:
        """What a run's result depends on: the teacher's part (its files' hashes), the analog's files, device and
        dtype, the config values it reads (never a threshold), its resolved inputs, its code and the package versions."""
        spec = self.runs[name]
        device = "cpu" if resolve_device(self.settings.device) == "cpu" else "cuda"
        return cache.cache_key(
            teacher=store.part_files(self.teacher_half.files, name),
            with_teacher=spec.needs_teacher and self.teacher_half.live,
            analog=sha256_files(self.model_sources[1].files(), self.cache_dir),
            dtype=str(resolve_dtype(self.settings.dtype, device)),
            device=device,
            settings={**spec.settings(self.analog_config), **spec.teacher_settings(self.analog_config)},
            inputs=inputs,
            code=spec.code,
            versions=[__version__, *map(package_version, spec.packages)],
        )

    # -- guarding -------------------------------------------------------------------------

    def require(self) -> None:
        """Skip the calling test without models; fail it when an earlier measurement failed (`guarded`)."""
        if not self.enabled:
            pytest.skip("no models: give --analog-teacher and --analog-student (or their ini twins)")
        if self.failure:
            pytest.fail(self.failure, pytrace=False)

    def guarded(self, fn, *args, **kwargs):
        """Run ``fn`` once: if it fails, this test and every later one fail with its reason.

        An `AnalogError` (bad input) fails with its one-line message; anything
        else also shows its traceback, once, and is not retried by later tests.
        """
        try:
            return fn(*args, **kwargs)
        except AnalogError as exc:
            self.failure = str(exc)
            pytest.fail(self.failure, pytrace=False)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            raise

    @contextlib.contextmanager
    def showing_progress(self):
        """Let progress bars through pytest's output capture while models load and run."""
        capman = self.pytest_config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            yield

    @contextlib.contextmanager
    def checking(self):
        """Bad input found before measuring: a one-line usage error, and no earlier verdict left behind."""
        try:
            yield
        except AnalogError as exc:
            withdraw(self)
            raise pytest.UsageError(str(exc)) from None

    # -- criteria -------------------------------------------------------------------------

    def add(self, criterion: Criterion, nodeid: str | None = None) -> None:
        """Record ``criterion``; ``nodeid``, the test that measured it, orders criteria merged from xdist workers."""
        self.criteria.append(criterion)
        if nodeid:
            self.nodeids[criterion.id] = nodeid

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Note a test whose report carries a recorded criterion (``fidelity_record`` adds ``analog_metric`` to its
        user properties): the xdist controller sees these reports too, whether or not their worker hands its state over."""
        if any(name == "analog_metric" for name, _ in report.user_properties):
            self.recording_tests.add(report.nodeid)
