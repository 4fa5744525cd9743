"""The fidelity configuration: shipped defaults overlaid by the user's YAML.

The dataclasses below are the schema: their fields are the only allowed keys,
their annotations the allowed types. `defaults.yaml` beside this module holds
every default value and the reasoning behind each threshold.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pytest_analog.errors import AnalogError
from pytest_analog.criterion import Gate
from pytest_analog.facts import METRICS

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
class CKASettings:
    debiased: bool


@dataclass(frozen=True)
class RBFSettings:
    sigma_frac: float
    debiased: bool


@dataclass(frozen=True)
class KNNSettings:
    k: int


@dataclass(frozen=True)
class Representation:
    """Settings of the representation metrics (read by the capture pass; thresholds are in `Gates`)."""

    cka: CKASettings
    rbf_cka: RBFSettings
    mutual_knn: KNNSettings


@dataclass(frozen=True)
class Embeddings:
    """Shared token rows sampled for the (un)embedding geometry, and the fewest that are measurable."""

    rows: int
    min_rows: int

    def __post_init__(self):
        if self.rows < self.min_rows:
            raise AnalogError(f"embeddings: rows ({self.rows}) must be at least min_rows ({self.min_rows})")


@dataclass(frozen=True)
class Logits:
    """What a teacher reference keeps of each next-token distribution."""

    top_k: int


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


@dataclass(frozen=True)
class ModelCardCheck:
    sections: dict[str, list[str]]


@dataclass(frozen=True)
class LicenseCheck:
    allowed: list[str]


@dataclass(frozen=True)
class TrainingCodeCheck:
    files: list[str]
    sections: list[str]


@dataclass(frozen=True)
class ReleaseDates:
    teacher: str | None
    analog: str | None


@dataclass(frozen=True)
class Compliance:
    """What the compliance checks look for (whether each is required is in `Gates`)."""

    model_card: ModelCardCheck
    license: LicenseCheck
    training_code: TrainingCodeCheck
    release_dates: ReleaseDates


@dataclass(frozen=True)
class Steering:
    behaviours: list[str]
    teacher_layers: Literal["auto"] | list[int]
    analog_layers: Literal["best_match", "proportional"] | dict[int, int]
    position: int
    method: Literal["mean", "pca"]
    alphas: list[float]
    from_position: int
    map: Literal["ridge", "procrustes", "autoencoder"]
    ridge: float
    autoencoder_steps: int
    map_prompts: int
    max_length: int
    train_items: int
    eval_items: int
    batch_size: int
    seed: int
    min_native_effect: float
    random_directions: int  # random analog directions whose mapped cosine is direction fidelity's chance level
    random_vectors: int  # random steering vectors run on the teacher: the transfer ratio's chance level


@dataclass(frozen=True)
class Benchmarks:
    """lm-eval tasks run on both models (the gate on each task is `Gates.benchmarks`)."""

    tasks: list[str]
    num_fewshot: int | None
    limit: int | None
    batch_size: int
    backend: Literal["hf", "vllm"]  # lm-eval's model of the teacher half: transformers (hf) or vLLM


# -- gates: thresholds, scores and decision rules; a run never reads them, so changing one re-judges from the cache

Rule = Literal["point", "lower_bound"]  # the decision rule: see `criterion.judge`


@dataclass(frozen=True)
class AtLeast:
    """A higher-is-better criterion, gated when ``min`` is set; ``rule`` null follows ``gates.rule``."""

    min: float | None
    rule: Rule | None


@dataclass(frozen=True)
class AtMost:
    """A lower-is-better criterion, gated when ``max`` is set; ``rule`` null follows ``gates.rule``."""

    max: float | None
    rule: Rule | None


@dataclass(frozen=True)
class Scored(AtLeast):
    """A criterion with a chance level: ``min`` applies to the raw or the chance-corrected score."""

    score: Literal["raw", "corrected"]


@dataclass(frozen=True)
class CKAGate(Scored):
    min_prompts: int  # fewer prompts: each CKA criterion is flagged "few prompts" (the verdict stands)


@dataclass(frozen=True)
class Range:
    """A quantity gated on both sides, one criterion each (``min`` / ``max``, null: not gated on that side)."""

    min: float | None
    max: float | None


@dataclass(frozen=True)
class Required:
    """A yes/no compliance check, gated when ``required``."""

    required: bool


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


@dataclass(frozen=True)
class Gates:
    """Every threshold of the built-in suites; `gate` turns one into the `criterion.Gate` of a criterion."""

    rule: Rule
    cka: CKAGate
    rbf_cka: Scored
    mutual_knn: Scored
    embedding_geometry: Scored
    unembedding_geometry: Scored
    kl: AtMost
    top1_agreement: AtLeast
    perplexity_ratio: AtMost
    transfer_ratio: AtLeast
    transfer_gap: AtMost
    spearman: AtLeast
    random_control: AtMost
    direction_fidelity: Scored
    map_fvu: AtMost
    map_cosine: AtLeast
    benchmarks: BenchmarkGates
    parameter_fraction: Range
    same_family: Required
    safetensors: Required
    model_card: Required
    license: Required
    training_code: Required
    release_lag: Range

    def gate(self, metric: str, value: float | None = None, **details: Any) -> Gate:
        """The gate of a built-in criterion, the one the suites record and the leaderboard checks.

        ``details`` select among a metric's gates: ``bound`` ("min"/"max") for a range,
        ``task`` and ``higher_is_better`` for a benchmark. A benchmark task with no retained
        fraction (``value`` None: the teacher is not above chance) is reported, not gated, and so
        is a criterion that ``needs_teacher`` and has no value (a teacher reference cannot measure it).
        """
        if metric in ("benchmark_retained", "benchmark_delta"):
            return self._benchmark_gate(metric, value, details.get("task"), details.get("higher_is_better", True))
        entry = getattr(self, metric)
        if value is None and details.get("needs_teacher"):
            return Gate(score=getattr(entry, "score", "raw"), rule=getattr(entry, "rule", None) or self.rule)
        if isinstance(entry, Required):
            return Gate("min", 1.0, rule=self.rule) if entry.required else Gate(rule=self.rule)
        direction = details["bound"] if isinstance(entry, Range) else METRICS[metric].direction
        threshold = getattr(entry, direction)
        rule = getattr(entry, "rule", None) or self.rule
        score = getattr(entry, "score", "raw")
        return Gate(direction, threshold, score, rule) if threshold is not None else Gate(score=score, rule=rule)

    def _benchmark_gate(self, metric: str, value, task: str | None, higher_is_better: bool) -> Gate:
        retained, drop = self.benchmarks.thresholds(task)
        rule = self.benchmarks.rule or self.rule
        if metric == "benchmark_delta" and drop is not None:
            return Gate("min", -drop, rule=rule) if higher_is_better else Gate("max", drop, rule=rule)
        if metric == "benchmark_retained" and drop is None and retained is not None and value is not None:
            return Gate("min", retained, rule=rule)
        return Gate(rule=rule)


@dataclass(frozen=True)
class Config:
    version: int
    prompts: Prompts
    batch_size: int
    seed: int
    positions: Positions
    layers: Layers
    chance: Chance
    representation: Representation
    embeddings: Embeddings
    logits: Logits
    reference: ReferenceSettings
    compliance: Compliance
    steering: Steering
    benchmarks: Benchmarks
    gates: Gates

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Criteria whose chance level is their own (random steering directions), not the chance.control model's.
OWN_CHANCE = ("direction_fidelity",)

# Value checks beyond the type: dotted key -> (predicate, what is expected). Every count has an upper bound
# so that a typo cannot ask for more than a machine holds: each is far above any useful value (resamples: intervals
# settle within a few thousand; rows and prompts: n^2 Gram matrices of 65,536 rows take 32 GiB), and what fits
# below them is checked against the memory available before any model loads (`memory.gate_memory`).
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
    "gates.cka.min_prompts": (lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
    "representation.mutual_knn.k": (lambda v: 1 <= v <= 1_000, "an integer from 1 to 1,000"),
    "representation.rbf_cka.sigma_frac": (lambda v: v > 0, "a number > 0"),
    "embeddings.rows": (lambda v: 3 <= v <= 65_536, "an integer from 3 to 65,536"),
    "embeddings.min_rows": (lambda v: 3 <= v <= 65_536, "an integer from 3 to 65,536"),
    "logits.top_k": (lambda v: 1 <= v <= 65_536, "an integer from 1 to 65,536"),
    "compliance.release_dates.teacher": (lambda v: v is None or _is_date(v), "null or a date YYYY-MM-DD"),
    "compliance.release_dates.analog": (lambda v: v is None or _is_date(v), "null or a date YYYY-MM-DD"),
    "steering.behaviours": (lambda v: 1 <= len(v) <= 100, "a list of 1 to 100 behaviour names or .jsonl paths"),
    "steering.alphas": (lambda v: len(v) <= 100 and any(a > 0 for a in v), "a list of at most 100 numbers with at least one > 0"),
    "steering.from_position": (lambda v: 0 <= v <= 32_768, "an integer from 0 to 32,768"),
    "steering.ridge": (lambda v: v > 0, "a number > 0"),
    "steering.autoencoder_steps": (lambda v: 1 <= v <= 1_000_000, "an integer from 1 to 1,000,000"),
    "steering.map_prompts": (lambda v: 5 <= v <= 100_000, "an integer from 5 to 100,000 (every fifth prompt is held out)"),
    "steering.max_length": (lambda v: 2 <= v <= 32_768, "an integer from 2 to 32,768"),
    "steering.train_items": (lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
    "steering.eval_items": (lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
    "steering.batch_size": (lambda v: 1 <= v <= 4_096, "an integer from 1 to 4,096"),
    "steering.seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    "steering.min_native_effect": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "steering.random_directions": (lambda v: 2 <= v <= 100_000, "an integer from 2 to 100,000"),
    "steering.random_vectors": (lambda v: 1 <= v <= 1_000, "an integer from 1 to 1,000"),
    "benchmarks.tasks": (lambda v: 1 <= len(v) <= 1_000, "a list of 1 to 1,000 task names or task YAML paths"),
    "benchmarks.num_fewshot": (lambda v: v is None or 0 <= v <= 100, "null or an integer from 0 to 100"),
    "benchmarks.limit": (lambda v: v is None or 1 <= v <= 10_000_000, "null or an integer from 1 to 10,000,000"),
    "benchmarks.batch_size": (lambda v: 1 <= v <= 4_096, "an integer from 1 to 4,096"),
    "gates.benchmarks.min_retained": (lambda v: v is None or v <= 1, "null or a number <= 1"),
    "gates.benchmarks.max_drop": (lambda v: v is None or v >= 0, "null or a number >= 0"),
}


def _is_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Load the shipped defaults, overlay the YAML file at ``path`` and ``overrides``.

    ``overrides`` are dotted keys (``{"prompts.max_prompts": 16}``) applied last.

    Raises:
        AnalogError: the file is missing or not YAML, or a key or value is invalid.
    """
    data = _read_yaml(DEFAULTS_PATH)
    if path is not None:
        user = _read_yaml(Path(path))
        _overlay(data, user, "", str(path))
        if isinstance(data["prompts"], dict):  # a relative prompt file is beside the config file
            data["prompts"]["set"] = _beside(Path(path), data["prompts"]["set"])
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    config = _build(Config, data, "", str(path or DEFAULTS_PATH))
    _check_thresholds(config, str(path or DEFAULTS_PATH))
    if config.chance.control == "none":
        corrected = [name for name, c in vars(config.gates).items()
                     if getattr(c, "score", "raw") == "corrected" and name not in OWN_CHANCE]
        if corrected:
            raise AnalogError(
                f"{path or DEFAULTS_PATH}: gates {', '.join(corrected)} use score: corrected, which needs a chance "
                "level; set chance.control to random or permuted, or their score to raw"
            )
    return config


def config_from_dict(data: Any, source: str) -> Config:
    """The `Config` a ``to_dict`` record holds (e.g. a report's ``config``), checked as a loaded file is.

    Raises:
        AnalogError: a key or value is missing or invalid; ``source`` names where it came from.
    """
    config = _build(Config, data, "", source)
    _check_thresholds(config, source)
    return config


def _check_thresholds(config: Config, source: str) -> None:
    """Refuse a threshold outside the values its metric can take (`facts.Metric.bounds`): it could never
    pass, or never fail."""
    for name, rule in vars(config.gates).items():
        if name not in METRICS:
            continue
        corrected = getattr(rule, "score", "raw") == "corrected"  # (value - chance) / (1 - chance) <= 1
        low, high = (-math.inf, 1.0) if corrected else METRICS[name].bounds
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


def _overlay(base: dict, user: dict, prefix: str, source: str) -> None:
    """Merge ``user`` into ``base`` in place, rejecting keys ``base`` does not have."""
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if key not in base and dotted in MOVED:
            raise AnalogError(f"{source}: config key '{dotted}' {MOVED[dotted]} (config schema {SCHEMA})")
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(map(str, base))}"
            raise AnalogError(f"{source}: unknown config key '{dotted}'{hint}")
        if isinstance(base[key], dict) and isinstance(value, dict) and key not in ("map", "analog_layers", "per_task"):
            _overlay(base[key], value, f"{dotted}.", source)
        else:
            base[key] = value


def _build(cls, data: Any, prefix: str, source: str):
    if not isinstance(data, dict):
        raise AnalogError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        if field.name not in data:
            raise AnalogError(f"{source}: missing config key '{dotted}'")
        kwargs[field.name] = _value(hints[field.name], data[field.name], dotted, source)
    return cls(**kwargs)


def _value(annotation, value, dotted: str, source: str):
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, f"{dotted}.", source)
    if isinstance(value, datetime.date):  # YAML reads an unquoted 2025-01-31 as a date
        value = value.isoformat()
    if not _matches(annotation, value):
        raise AnalogError(f"{source}: '{dotted}' must be {_describe(annotation)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise AnalogError(f"{source}: '{dotted}' must be finite, got {value!r}")
    check = _RANGES.get(dotted)
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
