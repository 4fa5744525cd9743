"""What a run is: one expensive measurement that a suite's tests read, in two halves.

The teacher half (`Run.teacher`) is the only place the teacher runs: it returns
a `part.Part`, the teacher's contribution, which a teacher reference stores.
The analog half (`Run.compute`) reads that part and runs the analog. The
session performs any run through one mechanism (part from a reference, the
cache or the teacher; then memo, cache key, cache, failure guard, progress); a
`Run` says only what differs. Cache keys hash the config values a half reads
(`Run.settings`, `Run.teacher_settings`), never a threshold or decision rule,
so changing a gate re-judges from the cache without a forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pytest_analog.lazy import Lazy, module_file

@dataclass(frozen=True)
class Inputs:
    """What a run reads besides the models and the config, resolved by the session."""

    args: dict[str, Any]  # keyword arguments of `Run.compute`
    key: dict[str, Any]  # what identifies them in the cache key (hashes, layer pairs)


@dataclass(frozen=True)
class Outcome:
    """A performed run: its payload (plain JSON), whether it came from the cache, and its result."""

    payload: Any
    cached: bool
    result: Any


class Context:
    """What a run's inputs read (`Run.teacher_inputs`, `Run.inputs`): the gate's session, or a build's stand-in.

    Its attributes: ``analog_config``, ``settings`` (the options: ``suites``, ...), ``depths`` (teacher,
    analog; the analog's None in a build), ``verbose`` and ``teacher_half``; `once` keeps what inputs resolve.
    """

    def once(self, key, make: Callable[[], Any]):
        """``make()``, computed once under ``key`` (what suites resolve: tasks, vectors, maps)."""
        memo = self.__dict__.setdefault("_once", {})
        if key not in memo:
            memo[key] = make()
        return memo[key]


@dataclass(frozen=True)
class Shape:
    """What sets the size of a run's arrays besides the config: checked against memory before any model loads."""

    prompts: int  # prompts of the prompt set (after ``prompts.max_prompts``)
    widths: tuple[int, int]  # (teacher, analog) hidden sizes
    gated_layers: int  # gated teacher layers


def _no_inputs(session) -> Inputs:
    return Inputs({}, {})


@dataclass(frozen=True, kw_only=True)
class Run:
    """One cached run: what it reads, how it computes, what the fixtures get and what the report shows."""

    name: str  # also its folder in the cache and its part's name in a teacher reference
    teacher: Callable[..., Any]  # (teacher LoadedModel, Config, **Inputs.args) -> `Part`: the teacher's contribution
    compute: Callable[..., Any]  # (ModelPair, Part, Config, **Inputs.args) -> JSON-able payload
    teacher_reads: tuple[str, ...] = ()  # dotted config keys the teacher half reads: its part's key holds their values
    teacher_inputs: Callable[[Any], Inputs] = _no_inputs  # (session) -> the teacher half's inputs (never the analog's)
    reads: tuple[str, ...] = ()  # dotted config keys the analog half reads: its cache key hashes their values
    inputs: Callable[[Any], Inputs] | None = None  # (session) -> the analog half's inputs; None: the teacher half's
    result: Callable[[Any], Any] = lambda payload: payload  # payload -> what the fixtures hand out
    section: Callable[[Outcome, Any], dict[str, Any]] = lambda done, config: {}  # the report keys this run adds
    packages: tuple[str, ...] = ("torch", "transformers")  # whose versions the cache keys hold
    needs_teacher: bool = False  # the analog half also runs the teacher when it is loaded (steering transfer)
    parallel: bool = False  # the teacher half splits its batches over `accelerate launch`'s processes (`reference.processes`)
    # (Part, teacher record) -> the first way a stored part does not fit this run's schema, or None
    part_problem: Callable[[Any, dict[str, Any]], str | None] = lambda part, teacher: None
    # (Config, `Shape`) -> its largest arrays in bytes, by the config key that sets their size (`memory`)
    memory: Callable[[Any, Any], dict[str, int]] = lambda config, shape: {}

    @functools.cached_property
    def code(self) -> str:
        """SHA-256 of the source files of its halves and their inputs (the files, by content, wherever they lie):
        the cache keys of its parts and results hold it, so editing a suite's code (a conftest's) reruns it."""
        digest = hashlib.sha256()
        for path in sorted({_source(fn) for fn in (self.teacher, self.teacher_inputs, self.compute, self.inputs) if fn}):
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def analog_inputs(self, session) -> Inputs:
        """The analog half's inputs."""
        return (self.inputs or self.teacher_inputs)(session)

    def settings(self, config: Any) -> dict[str, Any]:
        """The config values the analog half reads, by dotted key (a section stands for all its keys)."""
        return {path: _lookup(config, path) for path in self.reads}

    def teacher_settings(self, config: Any) -> dict[str, Any]:
        """The config values the teacher half reads, by dotted key."""
        return {path: _lookup(config, path) for path in self.teacher_reads}


def _source(fn: Callable) -> Path:
    """The file that defines ``fn`` (a function, or a `lazy.Lazy`'s module, found without importing it)."""
    return module_file(fn.name.partition(":")[0]) if isinstance(fn, Lazy) else Path(inspect.getsourcefile(fn))


def _lookup(config: Any, path: str) -> Any:
    value = config
    for name in path.split("."):
        value = getattr(value, name)
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
