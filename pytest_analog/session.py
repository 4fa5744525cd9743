"""The state of one pytest run with the plugin: settings, models, measurements, criteria, report.

`plugin` holds only hooks and fixtures; they hand every piece of work to the
`AnalogSession` created in ``pytest_configure``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_analog import __version__, cache
from pytest_analog.config import load_config
from pytest_analog.errors import AnalogError
from pytest_analog.models import parameter_fraction
from pytest_analog.options import EXIT_PARTIAL, SettingsError, read_settings
from pytest_analog.criterion import Criterion
from pytest_analog.resources import shipped
from pytest_analog.runs import RUNS, SUITE_RUNS, Inputs, Outcome, Run
from pytest_analog.versions import package_version

WORKER_OUTPUT = "pytest_analog"  # key of a worker's state in pytest-xdist's ``workeroutput``


class AnalogSession:
    """Settings, config, models, measurements and criteria of one pytest run."""

    def __init__(self, config: pytest.Config):
        self.pytest_config = config
        # a pytest-xdist worker measures and hands its state to the controller, which alone writes
        self.is_worker = hasattr(config, "workerinput")
        cache.begin_run()
        try:
            self.settings = read_settings(config)
        except SettingsError as exc:
            self.settings = exc.settings
            self._withdraw()
            raise
        overrides = {}
        if self.settings.max_prompts:  # a quick run: also at most that many items per benchmark task
            overrides.update({"prompts.max_prompts": self.settings.max_prompts, "benchmarks.limit": self.settings.max_prompts})
        if self.settings.tasks:
            overrides["benchmarks.tasks"] = list(self.settings.tasks)
        with self._checking():
            self.analog_config = load_config(self.settings.config, **overrides)
        self.criteria: list[Criterion] = []
        self._nodeids: dict[str, str] = {}  # criterion id -> id of the test that recorded it
        self._collected: list[tuple[int, Criterion]] = []  # (collection index, criterion) from xdist workers
        self._merged: set[str] = set()  # xdist workers whose state was merged
        self._merged_models: dict | None = None  # model records from a worker that loaded the models
        self._merged_references: list[dict] = []  # the reference manifests of xdist workers' teacher parts
        self._deselected = 0  # deselected tests that record criteria (-k, -m, --lf, --deselect, --sw)
        self._partial: str | None = None  # why this run's report covers only part of the criteria
        self._suites_seen: set[str] = set()  # built-in suites with a collected test (merged over xdist workers)
        self._recording_tests: set[str] = set()  # tests whose reports carry a recorded criterion (controller)
        self._workers_down: list[str] = []  # xdist workers that went down without handing over their state
        self._unwritten: str | None = None  # why the report or bundle could not be written (one line)
        self._sources: tuple = ()  # (teacher, analog) `ModelSource`, resolved before collection; teacher None with a reference
        self.teacher_half = None  # `reference.teacher.TeacherHalf`: each run's teacher part, set before collection
        self.depths: tuple[int, int] | None = None  # (teacher, analog) number of blocks, read before collection
        self._analog = None  # the loaded analog
        self._runs: dict[str, Outcome] = {}  # the cached runs performed (`run`), by name
        self._steering_memo: dict[tuple, Any] = {}  # steering_vector / steering_map results by arguments
        self.tasks = None  # `evals.TaskSet`, resolved before collection when the benchmarks suite runs
        self._failure: str | None = None
        self.submitted: Path | None = None  # the bundle --analog-submit wrote

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
        cache = getattr(self.pytest_config, "cache", None)
        return Path(cache.mkdir("analog")) if cache is not None else None

    @functools.cached_property
    def suites_dir(self) -> Path:
        """The folder of the built-in suites (``suites/`` in a checkout, ``pytest_analog/suites`` installed)."""
        return shipped("suites")

    def is_suite(self, path: Path) -> bool:
        return path.parent == self.suites_dir and path.name.startswith("test_") and path.suffix == ".py"

    def wants_suite(self, path: Path) -> bool:
        """True for a built-in suite file chosen by --analog-suites when models are given."""
        return self.enabled and path.stem.removeprefix("test_") in self.settings.suites

    # -- models ---------------------------------------------------------------------------

    def check_models(self) -> None:
        """Check every input that can be checked before any test, so bad input is a usage error (exit 4):
        both models (resolved, configs read, safetensors headers, tokenizer code and size; no weights loaded),
        the prompt set, steering layers and behaviours, benchmark tasks, and the memory the config needs."""
        from pytest_analog.layers import gated_layers, layer_map
        from pytest_analog.memory import available_memory, gate_memory, memory_problem
        from pytest_analog.models import check_files, check_vocab, read_config, resolve_device, resolve_source
        from pytest_analog.prompts import load_prompts

        from pytest_analog.reference import store
        from pytest_analog.reference.teacher import TeacherHalf

        settings = self.settings
        with self._checking():
            resolve_device(settings.device)
            reference = store.load(settings.reference) if settings.reference else None
            sources, depths = [None] if reference else [], [reference.teacher["num_layers"]] if reference else []
            width = reference.teacher.get("hidden_size") if reference else None
            widths = [width if isinstance(width, int) else 0] if reference else []
            for ref in (settings.student,) if reference else (settings.teacher, settings.student):
                with self.showing_progress():  # a hub download shows its progress
                    sources.append(
                        resolve_source(ref, allow_pickle=settings.allow_pickle, trust_remote_code=settings.trust_remote_code)
                    )
                config = read_config(sources[-1], trust_remote_code=settings.trust_remote_code)
                check_files(sources[-1], trust_remote_code=settings.trust_remote_code)
                check_vocab(sources[-1], config, trust_remote_code=settings.trust_remote_code)
                depths.append(config.get_text_config().num_hidden_layers)
                widths.append(config.get_text_config().hidden_size)
            prompts = len(load_prompts(self.analog_config.prompts.set, self.analog_config.prompts.max_prompts).texts)
            gated = gated_layers(self.analog_config, depths[0])
            layer_map(self.analog_config, gated, *depths)
            wanted = {SUITE_RUNS[suite] for suite in settings.suites}
            sizes = gate_memory(self.analog_config, prompts=prompts, widths=(widths[0], widths[1]), gated_layers=len(gated), runs=wanted)
            problem = memory_problem(sizes, available_memory())
            if problem:
                raise AnalogError(problem)
            if "steering" in wanted:
                _check_steering(self.analog_config.steering, depths)
            if "benchmarks" in wanted:
                from pytest_analog.evals import resolve_tasks

                self.tasks = resolve_tasks(self.analog_config.benchmarks.tasks)
            self._sources = tuple(sources)
            self.depths = (depths[0], depths[1])
            self.teacher_half = TeacherHalf(
                self, reference=reference, source=sources[0], load=self._load_teacher, cache_dir=self.cache_dir,
                device=settings.device, dtype=settings.dtype,
            )
            if reference is not None:  # a reference that cannot serve this run is refused before the analog loads
                needed = wanted - {None}
                if "steering" in needed and self.analog_config.steering.analog_layers == "best_match":
                    needed.add("representation")  # the CKA best match picks each steered layer's analog layer
                for name in sorted(needed):
                    self.teacher_half.part(RUNS[name])

    def sources(self) -> tuple:
        """The resolved (teacher, analog) `ModelSource` (teacher None with a reference); skips the test when no
        models were given."""
        self._require()
        return self._sources

    def teacher_layers(self) -> list[int]:
        """The gated teacher layers (for parametrizing per-layer criteria); empty without models."""
        from pytest_analog.layers import gated_layers

        return gated_layers(self.analog_config, self.depths[0]) if self.depths else []

    def benchmark_tasks(self) -> list[str]:
        """lm-eval task names of the benchmarks suite (for parametrizing); empty without models."""
        return self.tasks.names if self.tasks else []

    def pair(self):
        """The loaded teacher and analog, each loaded once per session (not with a teacher reference)."""
        from pytest_analog.models import ModelPair

        self._require()
        if self.settings.reference:
            pytest.fail("this test needs the teacher model, but this run gates against a teacher reference "
                        "(--analog-reference); give --analog-teacher to run it", pytrace=False)
        return ModelPair(self.guarded(self.teacher_half.model), self.analog_model())

    def analog_model(self):
        """The loaded analog, loaded once per session."""
        if self._analog is None:
            self._require()
            self._analog = self._load(self._sources[1])
        return self._analog

    def _load_teacher(self):
        return self._load(self._sources[0])

    def _load(self, source):
        from pytest_analog.models import load_model

        with self.showing_progress():
            return self.guarded(
                load_model, source, device=self.settings.device, dtype=self.settings.dtype,
                trust_remote_code=self.settings.trust_remote_code, allow_pickle=self.settings.allow_pickle,
                cache_dir=self.cache_dir,
            )

    def _pair_for(self, spec: Run):
        """The pair an analog half computes on: the loaded analog and the teacher's stand-in (its tokenizer and
        record); the loaded teacher itself only for a run that needs it, in a live gate."""
        from pytest_analog.models import ModelPair

        half = self.teacher_half
        teacher = half.model() if spec.needs_teacher and not self.settings.reference else half.stand_in()
        return ModelPair(teacher, self.analog_model())

    def run(self, name: str):
        """The result of the cached run ``name`` (`runs.RUNS`), performed once per session: read from the
        cache under its key, else computed (models loaded, progress shown) and stored."""
        from pytest_analog import cache

        if name not in self._runs:
            self._require()
            spec = RUNS[name]
            part = self.part(name)
            inputs = self.guarded(spec.inputs, self)
            key = self._cache_key(spec, inputs) if self.cache_dir else None  # hashes the analog's files
            payload = cache.load(self.cache_dir / name, key) if key else None
            cached = payload is not None
            if not cached:
                pair = self._pair_for(spec)
                with self.showing_progress():
                    payload = cache.canonical(self.guarded(spec.compute, pair, part, self.analog_config, **inputs.args))
                if key:
                    cache.store(self.cache_dir / name, key, payload)
            self._runs[name] = Outcome(payload, cached, self.guarded(spec.result, payload))
        return self._runs[name].result

    def part(self, name: str):
        """The teacher's `Part` of run ``name``: from the reference, the cache or the teacher (`TeacherHalf`)."""
        self._require()
        with self.showing_progress():
            return self.guarded(self.teacher_half.part, RUNS[name])

    def _cache_key(self, spec: Run, inputs: Inputs) -> str:
        """What a run's result depends on: the teacher's part (its files' hashes), the analog's files, device and
        dtype, the config values it reads (never a threshold), its resolved inputs and the package versions."""
        from pytest_analog import cache
        from pytest_analog.models import resolve_device, resolve_dtype, sha256_files
        from pytest_analog.reference import store

        device = "cpu" if resolve_device(self.settings.device) == "cpu" else "cuda"
        return cache.cache_key(
            teacher=store.part_files(self.teacher_half.files, spec.name),
            with_teacher=spec.needs_teacher and not self.settings.reference,
            analog=sha256_files(self._sources[1].files(), self.cache_dir),
            dtype=str(resolve_dtype(self.settings.dtype, device)),
            device=device,
            settings={**spec.settings(self.analog_config), **spec.teacher_settings(self.analog_config)},
            inputs=inputs.key,
            versions=[__version__, *map(package_version, spec.packages)],
        )

    def steering_cases(self) -> list[tuple[str, int]]:
        """(behaviour, teacher layer) pairs of the steering suite; empty without models."""
        from pytest_analog.steering.transfer import steering_layers

        if not self.depths:
            return []
        s = self.analog_config.steering
        layers = steering_layers(s, *self.depths, best_match=[0] * (self.depths[0] + 1))  # checked in check_models
        return [(Path(b).stem, i) for b in s.behaviours for i in layers]

    def steering_vector(self, behaviour: str, layer: int, model: str = "teacher"):
        """The mean-difference (or configured) steering vector of ``model`` at ``layer`` from a behaviour's train items."""
        key = ("vector", behaviour, layer, model)
        if key not in self._steering_memo:
            self._steering_memo[key] = self._steering_vector(behaviour, layer, model)
        return self._steering_memo[key]

    def _steering_vector(self, behaviour: str, layer: int, model: str):
        from pytest_analog.steering.behaviours import load_behaviour
        from pytest_analog.steering.vectors import extract

        if model not in ("teacher", "analog"):
            raise AnalogError(f"steering_vector model must be 'teacher' or 'analog', got {model!r}")
        s = self.analog_config.steering
        loaded_behaviour = self.guarded(load_behaviour, behaviour)
        if model == "teacher" and self.settings.reference:  # a teacher reference: its stored native vector
            tensors = self.part("steering").tensors
            name = f"{loaded_behaviour.name}/{layer}/native"
            if name not in tensors:
                _lacks("steering", f"native vector of {loaded_behaviour.name!r} at teacher layer {layer}",
                       "steering.behaviours and steering.teacher_layers")
            return tensors[name]
        loaded = self.analog_model() if model == "analog" else self.pair().teacher
        items = loaded_behaviour.train[: s.train_items]
        return self.guarded(
            extract, loaded, [i.positive for i in items], [i.negative for i in items], layer,
            position=s.position, method=s.method, batch_size=s.batch_size,
        )

    def steering_map(self, teacher_layer: int, analog_layer: int | None = None, kind: str | None = None):
        """A map from analog layer to teacher layer, fitted on the prompt set (analog layer: the CKA best block match)."""
        from pytest_analog.layers import best_block_match

        if analog_layer is None:
            analog_layer = best_block_match(self.run("representation").cka_matrix)[teacher_layer]
        key = ("map", teacher_layer, analog_layer, kind or self.analog_config.steering.map)
        if key not in self._steering_memo:
            self._steering_memo[key] = self._steering_map(teacher_layer, analog_layer, key[-1])
        return self._steering_memo[key]

    def _steering_map(self, teacher_layer: int, analog_layer: int, kind: str):
        from pytest_analog.prompts import load_prompts
        from pytest_analog.steering.transfer import MapStates, fit_maps

        s = self.analog_config.steering
        prompts = self.guarded(load_prompts, self.analog_config.prompts.set, s.map_prompts)
        teacher = None
        if self.settings.reference:  # a teacher reference: its stored activations on the map prompts
            part = self.part("steering")
            if f"map/{teacher_layer}" not in part.tensors:
                _lacks("steering", f"teacher activations at layer {teacher_layer} for steering maps", "steering.teacher_layers")
            teacher = MapStates({teacher_layer: part.tensors[f"map/{teacher_layer}"]}, part.meta["map_lengths"])
        fitted = self.guarded(
            fit_maps, self._pair_for(RUNS["steering"]), prompts.texts, [(teacher_layer, analog_layer)], kinds=(kind,), ridge=s.ridge,
            steps=s.autoencoder_steps, seed=s.seed, max_length=s.max_length, batch_size=s.batch_size, teacher=teacher,
        )
        return fitted[(teacher_layer, analog_layer)]["maps"][kind]

    def _require(self) -> None:
        if not self.enabled:
            pytest.skip("no models: give --analog-teacher and --analog-student (or their ini twins)")
        if self._failure:
            pytest.fail(self._failure, pytrace=False)

    def guarded(self, fn, *args, **kwargs):
        """Run ``fn`` once: if it fails, this test and every later one fail with its reason.

        An `AnalogError` (bad input) fails with its one-line message; anything
        else also shows its traceback, once, and is not retried by later tests.
        """
        try:
            return fn(*args, **kwargs)
        except AnalogError as exc:
            self._failure = str(exc)
            pytest.fail(self._failure, pytrace=False)
        except Exception as exc:
            self._failure = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            raise

    @contextlib.contextmanager
    def showing_progress(self):
        """Let progress bars through pytest's output capture while models load and run."""
        capman = self.pytest_config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            yield

    # -- criteria and report -----------------------------------------------------------------

    def add(self, criterion: Criterion, nodeid: str | None = None) -> None:
        """Record ``criterion``; ``nodeid``, the test that measured it, orders criteria merged from xdist workers."""
        self.criteria.append(criterion)
        if nodeid:
            self._nodeids[criterion.id] = nodeid

    def note_collected(self, item: pytest.Item) -> None:
        """Note the built-in suite ``item`` belongs to: a requested suite with no collected test makes the run partial."""
        if self.is_suite(item.path):
            self._suites_seen.add(item.path.stem.removeprefix("test_"))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Note a test whose report carries a recorded criterion (`Recorder` adds ``analog_metric`` to its user
        properties): the xdist controller sees these reports too, whether or not their worker hands its state over."""
        if any(name == "analog_metric" for name, _ in report.user_properties):
            self._recording_tests.add(report.nodeid)

    def note_deselected(self, items) -> None:
        """Count deselected tests that record criteria: without them the report covers part of the gate."""
        self._deselected += sum("fidelity_record" in getattr(item, "fixturenames", ()) for item in items)

    def worker_output(self, items) -> str:
        """What an xdist worker hands the controller (JSON): its criteria with their tests' collection
        indices, the payloads of its runs, failure and model records."""
        order = {item.nodeid: i for i, item in enumerate(items)}
        state = {
            "criteria": [
                [order.get(self._nodeids.get(c.id), len(order)), c.to_dict()] for c in self.criteria
            ],
            "runs": {name: {"payload": done.payload, "cached": done.cached} for name, done in self._runs.items()},
            "failure": self._failure,
            "models": self._models_info(),
            "reference": self._reference_manifest(),
            "deselected": self._deselected,
            "suites": sorted(self._suites_seen),
        }
        return json.dumps(state, default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value))

    def merge_worker(self, worker: str, output: str | None, error: object = None) -> None:
        """Take in an xdist worker's `worker_output`; a worker that went down without one fails the run and
        makes it partial."""
        if worker in self._merged:
            return
        self._merged.add(worker)
        if output is None:
            self._workers_down.append(worker)
            self._failure = self._failure or (
                f"pytest-xdist worker {worker} went down ({error or 'no output'}); the criteria it measured are missing"
            )
            return
        state = json.loads(output)
        self._collected += [(index, Criterion.from_dict(row)) for index, row in state["criteria"]]
        self._collected.sort(key=lambda pair: pair[0])  # collection order, as a serial run records them
        self.criteria = [criterion for _, criterion in self._collected]
        for name, done in state["runs"].items():
            if name not in self._runs:
                self._runs[name] = Outcome(done["payload"], done["cached"], RUNS[name].result(done["payload"]))
        self._failure = self._failure or state["failure"]
        self._merged_models = self._merged_models or state["models"]
        if state["reference"]:
            self._merged_references.append(state["reference"])
        self._deselected = max(self._deselected, state["deselected"])  # every worker collects the same tests
        self._suites_seen.update(state["suites"])

    def _models_info(self) -> dict | None:
        if "representation" in self._runs:
            return self._runs["representation"].result.models
        if self._analog:
            return {"teacher": self.teacher_half.record(), "analog": self._analog.info}
        return self._merged_models

    def model_records(self) -> dict[str, Any]:
        """Both models' records (the teacher's from its reference or the loaded teacher), loading only the analog."""
        self._require()
        return {"teacher": self.guarded(self.teacher_half.record), "analog": self.analog_model().info}

    def report(self) -> dict[str, Any]:
        """The report document (see `pytest_analog.report.schema`)."""
        from pytest_analog.reference import store
        from pytest_analog.report import SCHEMA_VERSION

        criteria = [c.to_dict() for c in self.criteria]
        gated = [c for c in self.criteria if c.gate.gated]
        failed = sum(not c.passed for c in gated)
        verdict = "fail" if failed or self._failure else "partial" if self._partial else "pass" if gated else "no gated criteria"
        report = {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tool": {"name": "pytest-analog", "version": __version__},
            "verdict": verdict,
            "environment": _environment(),
            "config": self.analog_config.to_dict(),
            "criteria": criteria,
            "summary": {
                "gated": len(gated),
                "passed": len(gated) - failed,
                "failed": failed,
                "informational": len(self.criteria) - len(gated),
                "not_measured": [  # ungated for lack of what measures them (the teacher, in reference mode)
                    {"id": c.id, "reason": c.measured.reason} for c in self.criteria
                    if not c.gate.gated and c.measured.value is None and c.measured.reason
                ],
            },
        }
        if self._failure:
            report["error"] = self._failure
        if self._partial:
            report["partial"] = self._partial
        infos = self._models_info()
        if infos:
            report["models"] = {
                **infos,
                "parameter_fraction": parameter_fraction(infos),
                "same_tokenizer": infos["teacher"]["tokenizer"]["sha256"] == infos["analog"]["tokenizer"]["sha256"],
            }
        reference = self._reference_manifest()
        if reference:
            report["reference"] = {
                "id": store.manifest_id(reference),
                "source": "file" if self.settings.reference else "memory",
                "path": str(self.settings.reference) if self.settings.reference else None,
                "parts": sorted(reference["parts"]),
                "teacher": reference["teacher"],
            }
        for name, spec in RUNS.items():  # the sections of the runs performed, in one order whoever performed them
            if name in self._runs:
                report.update(spec.section(self._runs[name], self.analog_config))
        return report

    def _reference_manifest(self) -> dict | None:
        """The manifest of the teacher reference this run read (its parts, merged over xdist workers), or None."""
        from pytest_analog.reference import store

        half = self.teacher_half
        if half is not None and half.given is not None:
            return half.given.manifest
        own = [half.manifest()] if half is not None and half.parts else []
        manifests = own + self._merged_references
        return store.merged(manifests) if manifests else None

    def finish(self, session: pytest.Session) -> list[Path]:
        """Write the report files for --analog-report and the bundle for --analog-submit (the xdist
        controller or a serial run only; a worker hands its state over in `worker_output`).

        What this run leaves at those paths is its own: a run with nothing to report removes
        the earlier report files and bundle, and a partial run (`_partial_reason`) writes a
        report whose verdict is at best "partial" and no bundle. ``--collect-only`` touches nothing.

        The exit code follows the verdict: a failed gate exits 1, a partial one that failed
        nothing `EXIT_PARTIAL`. A report or bundle that cannot be written (disk full, Ctrl-C)
        is one line in the summary and exit 4 (2 when interrupted); the earlier files stay whole.
        """
        from pytest_analog.atomic import remove_files
        from pytest_analog.report import write_reports

        if self.is_worker or session.config.option.collectonly:
            return []
        self._partial = self._partial_reason(session)
        if not (self.criteria or self._failure):
            self._settle(session, "partial" if self._partial else None)
            self._withdraw()
            return []
        report = self.report()
        self._settle(session, report["verdict"])
        written, writing = [], "report"
        try:
            if self.settings.report:
                written = write_reports(report, self.settings.report)
            writing = "submit"
            if self.settings.submit and "models" in report and not self._partial:
                from pytest_analog.submission import write_submission

                self.submitted = write_submission(report, *self._sources, self.settings.submit, self.cache_dir)
                written.append(self.submitted)
            elif self.settings.submit:
                remove_files([self.settings.submit])
        except (OSError, KeyboardInterrupt) as exc:
            self._not_written(session, exc, writing)
        return written

    def _settle(self, session: pytest.Session, verdict: str | None) -> None:
        """Give a run whose tests all passed the exit code of its verdict (a failed gate 1, a partial one 6)."""
        if self.enabled and session.exitstatus == pytest.ExitCode.OK:
            if verdict == "fail":
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            elif verdict == "partial":
                session.exitstatus = EXIT_PARTIAL

    def _not_written(self, session: pytest.Session, exc: BaseException, option: str) -> None:
        """The report files or the bundle (``option``: "report" or "submit") could not be written: one line for the
        summary. The earlier files stay whole (`atomic`: written beside them first, swapped in with SIGINT held back)."""
        what = "report files" if option == "report" else "bundle"
        option = f"--analog-{option}={getattr(self.settings, option)}"
        if isinstance(exc, KeyboardInterrupt):
            self._unwritten = f"{option}: interrupted while writing the {what}; nothing is half-written: the earlier {what} or this run's are in place"
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        else:
            self._unwritten = (f"{option}: the {what} could not be written ({exc.strerror or exc}); "
                               "what was there before is left as it was")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def _partial_reason(self, session: pytest.Session) -> str | None:
        """Why the tests that ran are not every test that records a criterion, or None."""
        if self._workers_down:
            return f"pytest-xdist worker(s) {', '.join(self._workers_down)} went down; the criteria they recorded are missing"
        missing = len(self._recording_tests) - len(self.criteria)
        if missing > 0:  # recorded by tests whose worker never handed them over
            return f"{missing} of the {len(self._recording_tests)} criteria that tests recorded are missing"
        if self._deselected:
            return f"{self._deselected} test(s) that record criteria were deselected (-k, -m, --lf, --deselect or --sw)"
        last_failed = self.pytest_config.pluginmanager.get_plugin("lfplugin")
        if self.pytest_config.getoption("lf", False) and last_failed is not None and last_failed.lastfailed:
            return "run with --lf: only the tests that failed last time ran"
        stopped = session.shouldfail or session.shouldstop or session.exitstatus == pytest.ExitCode.INTERRUPTED
        if stopped:
            return f"the run stopped before every test ran ({stopped if isinstance(stopped, str) else 'interrupted'})"
        unrun = [suite for suite in self.settings.suites if suite not in self._suites_seen]
        if self.enabled and unrun:
            return (f"requested suite(s) {', '.join(unrun)} never ran: none of their tests was collected "
                    "(--ignore, --ignore-glob, a conftest or a plugin left them out)")
        return None

    @contextlib.contextmanager
    def _checking(self):
        """Bad input found before measuring: a one-line usage error, and no earlier verdict left behind."""
        try:
            yield
        except AnalogError as exc:
            self._withdraw()
            raise pytest.UsageError(str(exc)) from None

    def _withdraw(self) -> None:
        """Remove the earlier report files and bundle from this run's output paths (never on a worker)."""
        from pytest_analog.atomic import remove_files
        from pytest_analog.report import remove_reports

        if self.is_worker:
            return
        if self.settings.report:
            remove_reports(self.settings.report)
        if self.settings.submit:
            remove_files([self.settings.submit])

    def display(self, terminalreporter) -> None:
        from pytest_analog.report import terminal_lines

        if not self.criteria:
            if self._partial and self.enabled:
                terminalreporter.write_sep("=", "analog fidelity")
                terminalreporter.write_line(f"analog fidelity: PARTIAL - {self._partial}")
            return
        terminalreporter.write_sep("=", "analog fidelity")
        for line in terminal_lines(self.report()):
            terminalreporter.write_line(line)
        failed = self._unwritten or ""
        if self.settings.report and not failed.startswith("--analog-report"):
            terminalreporter.write_line(f"report: {self.settings.report / 'fidelity.html'}")
        if self.settings.submit and not failed.startswith("--analog-submit"):
            why = "partial run" if self._partial else "the report was not written" if failed else "no model was measured"
            written = f"submission: {self.submitted}" if self.submitted else f"submission: none written ({why})"
            terminalreporter.write_line(written)
        if failed:
            terminalreporter.write_line(f"ERROR: {failed}", red=True, bold=True)


def _lacks(run: str, what: str, settings: str) -> None:
    """A fixture asks a teacher reference for what it does not hold: one line naming it."""
    raise AnalogError(f"the teacher reference's {run} part holds no {what}; build the reference with {settings} including it")


def _check_steering(settings, depths) -> None:
    """Bad steering layers or behaviour files are usage errors, found before any model loads."""
    from pytest_analog.steering.behaviours import load_behaviour
    from pytest_analog.steering.transfer import steering_layers

    steering_layers(settings, *depths, best_match=[0] * (depths[0] + 1))
    for name in settings.behaviours:
        load_behaviour(name)




def _environment() -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: package_version(name) for name in ("torch", "transformers", "numpy", "pytest")},
    }
    if "torch" in sys.modules:
        import torch

        env["device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return env
