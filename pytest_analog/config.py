"""The fidelity configuration: shipped defaults overlaid by the user's YAML.

The core sections below (prompts, positions, layers, chance, reference) and each
suite's section and gates (`suite.Suite.settings`, `.gates`) are the schema:
their fields are the only allowed keys, their annotations the allowed types.
`defaults.yaml` beside this module and each suite's ``defaults.yaml`` hold every
default value and the reasoning behind each threshold. The `Config` class of a
run is made from the suites it knows (`config_class`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import functools
import math
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

from pytest_analog import gates, registry
from pytest_analog.errors import AnalogError
from pytest_analog.suite import Suite

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
SCHEMA = 2  # the config's `version`
# Top-level keys of schema 1 that schema 2 moved: what to write instead.
MOVED = {
    "criteria": "moved: thresholds (min, max, score, gate) are now under gates.<metric> (gate is now rule), and "
                "the metric settings under representation (cka, rbf_cka, mutual_knn) and embeddings (rows, min_rows)",
    "gate": "moved to gates.rule",
    "steering.criteria": "moved: the steering thresholds are now under gates.<metric>, e.g. gates.transfer_ratio.min",
    **{f"benchmarks.{key}": f"moved to gates.benchmarks.{key.replace('gate', 'rule')}" for key in ("min_retained", "max_drop", "gate", "per_task")},
    **{f"compliance.{key}": f"moved: whether it is required is gates.{key}" for key in ("same_family", "safetensors")},
    **{f"compliance.{key}.required": f"moved to gates.{key}.required" for key in ("model_card", "license", "training_code")},
    "compliance.parameter_fraction": "moved to gates.parameter_fraction",
    "compliance.release_lag": "moved: the dates are compliance.release_dates, the bounds gates.release_lag",
}


@dataclass(frozen=True)
class Prompts:
    set: str
    max_prompts: int | None
    max_length: int


@dataclass(frozen=True)
class Positions:
    skip_first: bool
    massive: Literal["exclude", "keep"]
    massive_multiple: float


@dataclass(frozen=True)
class Layers:
    teacher: Literal["all"] | int | list[int]
    map: Literal["proportional"] | dict[int, int]
    matrix_rows: int


@dataclass(frozen=True)
class ReferenceSettings:
    """How a teacher reference stores the teacher's activations and embedding rows."""

    dtype: Literal["model", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class Chance:
    control: Literal["random", "permuted", "none"]
    seed: int
    resamples: int
    confidence: float
    rows: int
    seeds: int  # control models (seeds chance.seed, chance.seed + 1, ...); their spread enters the chance interval
    permutations: int  # prompt-level permutations of the permutation null; 0: none
    alpha: float  # the calibrated score is 0 at the permutation null's 1 - alpha quantile
    block_rows: int  # rows per prompt of the token-level permutation null (from the layer-matrix sample)


class Config:
    """Base of a run's config: the core sections, each suite's section (by its name) and ``gates``."""

    suites: ClassVar[tuple[Suite, ...]] = ()  # the suites whose sections it holds (set on each made class)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def config_class(suites: tuple[Suite, ...]) -> type:
    """The `Config` class of a run with ``suites``: the core sections, one per suite with settings, and gates."""
    judged_under = {name: m.judged_under for s in suites for name, m in s.metrics.items() if m.judged_under}
    gate_fields = [("rule", gates.Rule)] + [(key, kind) for s in suites for key, kind in s.gates.items()]
    gates_class = dataclasses.make_dataclass("Gates", gate_fields, bases=(gates.Gates,), frozen=True,
                                             namespace={"judged_under": judged_under})
    sections = [(s.name, s.settings) for s in suites if s.settings is not None]
    fields = [*_CORE, *sections, ("gates", gates_class)]
    return dataclasses.make_dataclass("Config", fields, bases=(Config,), frozen=True, namespace={"suites": suites})


_CORE = [("version", int), ("prompts", Prompts), ("batch_size", int), ("seed", int), ("positions", Positions),
         ("layers", Layers), ("chance", Chance), ("reference", ReferenceSettings)]


# Value checks beyond the type: dotted key -> (predicate, what is expected). Every count has an upper bound
# so that a typo cannot ask for more than a machine holds: each is far above any useful value (resamples: intervals
# settle within a few thousand; rows and prompts: n^2 Gram matrices of 65,536 rows take 32 GiB), and what fits
# below them is checked against the memory available before any model loads (each run's `runs.Run.memory`).
_RANGES = {
    "version": (lambda v: v == SCHEMA, f"{SCHEMA} (schema 1 kept thresholds beside settings; move them to gates: as README's Configuration shows)"),
    "prompts.max_prompts": (lambda v: v is None or 1 <= v <= 100_000, "null or an integer from 1 to 100,000"),
    "prompts.max_length": (lambda v: 2 <= v <= 32_768, "an integer from 2 to 32,768"),
    "batch_size": (lambda v: 1 <= v <= 4_096, "an integer from 1 to 4,096"),
    "seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    "layers.teacher": (lambda v: not isinstance(v, int) or 1 <= v <= 1_024, "'all', an integer from 1 to 1,024 or a list of integers"),
    "positions.massive_multiple": (lambda v: v > 1, "a number > 1"),
    "layers.matrix_rows": (lambda v: 8 <= v <= 65_536, "an integer from 8 to 65,536"),
    "chance.seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    "chance.resamples": (lambda v: v == 0 or 10 <= v <= 100_000, "0 (no intervals) or an integer from 10 to 100,000"),
    "chance.confidence": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "chance.rows": (lambda v: 8 <= v <= 65_536, "an integer from 8 to 65,536"),
    "chance.seeds": (lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
    "chance.permutations": (lambda v: v == 0 or 19 <= v <= 100_000, "0 (no permutation null) or an integer from 19 to 100,000"),
    "chance.alpha": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "chance.block_rows": (lambda v: 1 <= v <= 1_024, "an integer from 1 to 1,024"),
}


def load_config(path: str | Path | None = None, suites: tuple[Suite, ...] | None = None, **overrides: Any) -> Config:
    """Load the shipped defaults of the core and of ``suites``, overlay the YAML file at ``path`` and ``overrides``.

    ``suites`` defaults to the installed ones (`registry.installed`); ``overrides`` are dotted
    keys (``{"prompts.max_prompts": 16}``) applied last.

    Raises:
        AnalogError: the file is missing or not YAML, or a key or value is invalid.
    """
    suites = registry.installed() if suites is None else tuple(suites)
    cls = config_class(suites)
    data = _defaults(suites)
    if path is not None:
        user = _read_yaml(Path(path))
        _overlay(data, user, "", str(path), cls)
        if isinstance(data["prompts"], dict):  # a relative prompt file is beside the config file
            data["prompts"]["set"] = _beside(Path(path), data["prompts"]["set"])
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    source = str(path or DEFAULTS_PATH)
    config = _checked(cls, data, source)
    if config.chance.control == "none":
        metrics = registry.metrics(suites)
        corrected = [name for name, c in vars(config.gates).items()
                     if getattr(c, "score", "raw") == "corrected" and not (name in metrics and metrics[name].own_chance)]
        if corrected:
            raise AnalogError(
                f"{source}: gates {', '.join(corrected)} use score: corrected, which needs a chance "
                "level; set chance.control to random or permuted, or their score to raw"
            )
    return config


def config_from_dict(data: Any, source: str, suites: tuple[Suite, ...] | None = None) -> Config:
    """The `Config` a ``to_dict`` record holds (e.g. a report's ``config``), checked as a loaded file is.

    Raises:
        AnalogError: a key or value is missing or invalid; ``source`` names where it came from.
    """
    return _checked(config_class(registry.installed() if suites is None else tuple(suites)), data, source)


def _checked(cls: type, data: Any, source: str) -> Config:
    """``data`` built into ``cls`` with every value check of the core and of its suites."""
    checks = dict(_RANGES)
    for suite in cls.suites:
        checks.update(suite.checks)
    config = _build(cls, data, "", source, checks)
    _check_thresholds(config, source)
    return config


def _defaults(suites: tuple[Suite, ...]) -> dict:
    """The core's defaults with each suite's merged in (a suite's defaults are shaped as the config file)."""
    data = _read_yaml(DEFAULTS_PATH)
    for suite in suites:
        own = copy.deepcopy(dict(suite.defaults) if isinstance(suite.defaults, dict) else _read_yaml(suite.defaults) if suite.defaults else {})
        gates = own.pop("gates", None) or {}
        taken = sorted((data["gates"].keys() & gates.keys()) | (data.keys() & own.keys()) | (own.keys() - {suite.name}))
        if taken:
            raise AnalogError(f"suite {suite.name!r}: its defaults set {', '.join(taken)}, which the core or another suite "
                              f"holds; a suite's defaults hold its own section ({suite.name}) and its own gates")
        data.update(own)
        data["gates"].update(gates)
    return data


def _check_thresholds(config: Config, source: str) -> None:
    """Refuse a threshold outside the values its metric can take (`facts.Metric.bounds`): it could never
    pass, or never fail."""
    metrics = registry.metrics(config.suites)
    for name, rule in vars(config.gates).items():
        if name not in metrics:
            continue
        corrected = getattr(rule, "score", "raw") == "corrected"  # (value - chance) / (1 - chance) <= 1
        low, high = (-math.inf, 1.0) if corrected else metrics[name].bounds
        scale = "its corrected score takes" if corrected else f"{name} takes"
        at_least, at_most = getattr(rule, "min", None), getattr(rule, "max", None)
        for side, threshold in (("min", at_least), ("max", at_most)):
            if threshold is not None and not low <= threshold <= high:
                never = "pass" if (side == "min") == (threshold > high) else "fail"
                raise AnalogError(
                    f"{source}: 'gates.{name}.{side}: {threshold:g}' can never {never}: {scale} "
                    f"values in {'(' if low == -math.inf else '['}{low:g}, {high:g}{')' if high == math.inf else ']'}"
                )
        if at_least is not None and at_most is not None and at_least > at_most:
            raise AnalogError(f"{source}: 'gates.{name}' can never pass: min {at_least:g} is above max {at_most:g}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):  # the safe loader's own error names it
                continue
            if key in seen:
                raise AnalogError(
                    f"config file {self.name}, line {line}: duplicate key '{key}' (first given on line {seen[key]}); "
                    "give each key once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _beside(config_path: Path, value: Any) -> Any:
    """A relative file path (it has a suffix) resolved against the config file's folder; a shipped set name stays."""
    if isinstance(value, str) and Path(value).suffix and not Path(value).expanduser().is_absolute():
        return str(config_path.parent / value)
    return value


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise AnalogError(f"config file {path} does not exist; pass a YAML file to --analog-config")
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8"))
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AnalogError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AnalogError(f"config file {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def _overlay(base: dict, user: dict, prefix: str, source: str, cls: type) -> None:
    """Merge ``user`` into ``base`` (the data of dataclass ``cls``) in place, rejecting keys ``base`` does not have;
    a section (a dataclass field) is merged key by key, any other value replaced whole."""
    hints = typing.get_type_hints(cls)
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if key not in base and dotted in MOVED:
            raise AnalogError(f"{source}: config key '{dotted}' {MOVED[dotted]} (config schema {SCHEMA})")
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(map(str, base))}"
            raise AnalogError(f"{source}: unknown config key '{dotted}'{hint}")
        if dataclasses.is_dataclass(hints.get(key)) and isinstance(base[key], dict) and isinstance(value, dict):
            _overlay(base[key], value, f"{dotted}.", source, hints[key])
        else:
            base[key] = value


def _build(cls, data: Any, prefix: str, source: str, checks: dict):
    if not isinstance(data, dict):
        raise AnalogError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        if field.name not in data:
            raise AnalogError(f"{source}: missing config key '{dotted}'")
        kwargs[field.name] = _value(hints[field.name], data[field.name], dotted, source, checks)
    return cls(**kwargs)


def _value(annotation, value, dotted: str, source: str, checks: dict):
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, f"{dotted}.", source, checks)
    if isinstance(value, datetime.date):  # YAML reads an unquoted 2025-01-31 as a date
        value = value.isoformat()
    if not _matches(annotation, value):
        raise AnalogError(f"{source}: '{dotted}' must be {_describe(annotation)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise AnalogError(f"{source}: '{dotted}' must be finite, got {value!r}")
    check = checks.get(dotted)
    if check and not check[0](value):
        raise AnalogError(f"{source}: '{dotted}' must be {check[1]}, got {value!r}")
    return value


def _matches(annotation, value) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_matches(arg, value) for arg in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_matches(item, v) for v in value)
    if origin is dict:
        k, v = typing.get_args(annotation)
        return isinstance(value, dict) and all(_matches(k, a) and _matches(v, b) for a, b in value.items())
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


_PLURALS = {int: "integers", str: "strings"}


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"a list of {_PLURALS[typing.get_args(annotation)[0]]}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"a mapping of {_PLURALS[key]} to {_PLURALS.get(value) or _describe(value).replace('a list', 'lists')}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[annotation]
