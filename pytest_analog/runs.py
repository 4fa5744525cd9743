"""The cached runs behind the built-in suites: what each reads, computes, hands out and reports.

A run is one expensive measurement several tests read: the representation
capture (suites representation, embeddings, logits), steering transfer and the
lm-eval benchmarks. Each has two halves. The teacher half (`Run.teacher`) is the
only place the teacher runs: it returns a `reference.store.Part`, the teacher's
contribution, which a teacher reference stores. The analog half
(`Run.compute`) reads that part and runs the analog. `AnalogSession.run`
performs any run by name through one mechanism (part from a reference, the
cache or the teacher; then memo, cache key, cache, failure guard, progress); a
`Run` here says only what differs. Cache keys hash the config values a half
reads (`Run.settings`, `Run.teacher_settings`), never a threshold or decision
rule, so changing a gate re-judges from the cache without a forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from typing import Any, Callable

from pytest_analog.config import Config


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


@dataclass(frozen=True)
class Run:
    """One cached run: what it reads, how it computes, what the fixtures get and what the report shows."""

    name: str  # also its folder in the cache and its part's name in a teacher reference
    teacher_reads: tuple[str, ...]  # dotted config keys the teacher half reads: its part's key holds their values
    teacher_inputs: Callable[[Any], Inputs]  # (AnalogSession) -> the teacher half's inputs (never the analog's)
    teacher: Callable[..., Any]  # (teacher LoadedModel, Config, **Inputs.args) -> `Part`: the teacher's contribution
    reads: tuple[str, ...]  # dotted config keys the analog half reads: its cache key hashes their values
    inputs: Callable[[Any], Inputs]  # (AnalogSession) -> the analog half's resolved inputs
    compute: Callable[..., Any]  # (ModelPair, Part, Config, **Inputs.args) -> JSON-able payload
    result: Callable[[Any], Any]  # payload -> what the fixtures hand out
    section: Callable[[Outcome, Config], dict[str, Any]]  # the report keys this run adds
    packages: tuple[str, ...] = ("torch", "transformers")  # whose versions the cache keys hold
    needs_teacher: bool = False  # the analog half also runs the teacher when it is loaded (steering transfer)
    parallel: bool = False  # the teacher half splits its batches over `accelerate launch`'s processes (`reference.processes`)
    # (Part, teacher record) -> the first way a stored part does not fit this run's schema, or None
    part_problem: Callable[[Any, dict[str, Any]], str | None] = lambda part, teacher: None

    def settings(self, config: Config) -> dict[str, Any]:
        """The config values the analog half reads, by dotted key (a section stands for all its keys)."""
        return {path: _lookup(config, path) for path in self.reads}

    def teacher_settings(self, config: Config) -> dict[str, Any]:
        """The config values the teacher half reads, by dotted key."""
        return {path: _lookup(config, path) for path in self.teacher_reads}


def _lookup(config: Config, path: str) -> Any:
    value = config
    for name in path.split("."):
        value = getattr(value, name)
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def progress_bar(total: int, description: str, unit: str = "tok"):
    """A tqdm bar on stderr (the session lets it through pytest's capture while a run computes)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10)


# -- representation: one capture pass over the prompt set -----------------------------------------


def _representation_inputs(session) -> Inputs:
    from pytest_analog.prompts import load_prompts

    prompts = load_prompts(session.analog_config.prompts.set, session.analog_config.prompts.max_prompts)
    with_logits = _logits_wanted(session)
    return Inputs(
        args={"prompts": prompts, "with_logits": with_logits},
        key={"prompts": prompts.sha256, "with_logits": with_logits},  # by content: not where the file lies
    )


def _logits_wanted(session) -> bool:
    """Logits cost a vocabulary-wide output per token: only when a suite or a user test may read them."""
    suites = session.settings.suites
    return "logits" in suites or not suites


def _representation_teacher_inputs(session) -> Inputs:
    from pytest_analog.prompts import load_prompts

    prompts = load_prompts(session.analog_config.prompts.set, session.analog_config.prompts.max_prompts)
    with_logits = _logits_wanted(session)
    given = getattr(getattr(session, "teacher_half", None), "given", None)
    if not with_logits and given is not None and given.has("representation"):  # a part with logits serves too
        with_logits = given.manifest["parts"]["representation"]["key"].get("inputs", {}).get("with_logits", False)
    return Inputs(args={"prompts": prompts, "with_logits": with_logits},
                  key={"prompts": prompts.sha256, "with_logits": with_logits})


def _representation_part_problem(part, teacher) -> str | None:
    from pytest_analog.reference.representation import part_problem

    return part_problem(part, teacher)


def _teacher_part(teacher, config, *, prompts, with_logits):
    from pytest_analog.reference.representation import teacher_part

    return teacher_part(teacher, config, prompts=prompts, with_logits=with_logits)


def _measure(pair, part, config, *, prompts, with_logits):
    from pytest_analog.representation import measure
    from pytest_analog.controls import control_models

    chance = config.chance
    control = None if chance.control == "none" else control_models(pair.analog, chance.control, chance.seed, chance.seeds)
    measured = measure(pair, part, prompts, config, control=control, with_logits=with_logits, progress_factory=progress_bar)
    measured.capture.update(prompt_set=prompts.name, prompt_set_sha256=prompts.sha256)
    return measured.to_dict()


def _measurements(payload):
    from pytest_analog.representation import Measurements

    return Measurements.from_dict(payload)


def _representation_section(done: Outcome, config: Config) -> dict[str, Any]:
    m = done.result
    section = {
        "capture": {**m.capture, "cached": done.cached},
        "layers": {
            "convention": "layer i = hidden_states[i]: 0 is the embedding output, i is the output of block i-1",
            "teacher": list(range(len(m.cka_matrix))),
            "analog": list(range(len(m.cka_matrix[0]))),
            "cka_matrix": m.cka_matrix,
            "matrix_rows": m.matrix_rows,
            "best_match": m.best_match,
            "mapped": [m.mapped.get(i) for i in range(len(m.cka_matrix))],
            "chance_matrix": m.chance_matrix,
            **({f"{key}_calibration": m.calibration[key] for key in ("best_match", "best_block") if key in m.calibration}),
        },
    }
    if m.massive:
        section["massive"] = m.massive
    section["chance"] = {
        "control": m.control,
        "resamples": config.chance.resamples if m.intervals else 0,
        "confidence": config.chance.confidence,
        "corrected": "(value - chance) / (1 - chance): 0 at chance level, 1 for a perfect match",
    }
    return section


REPRESENTATION = Run(
    "representation",
    parallel=True,
    # the analog half: the plan (max_length, skip_first), batches, the bootstrap sample (seed), massive rows,
    # the layer map, chance and metric settings, the geometry's measurable minimum
    reads=("prompts.max_length", "batch_size", "seed", "positions", "layers.teacher", "layers.map", "chance",
           "representation", "embeddings.min_rows"),
    inputs=_representation_inputs,
    compute=_measure,
    result=_measurements,
    section=_representation_section,
    teacher_reads=("prompts.max_length", "batch_size", "seed", "positions.skip_first", "layers.teacher",
                   "layers.matrix_rows", "embeddings.rows", "logits.top_k", "reference.dtype"),
    teacher_inputs=_representation_teacher_inputs,
    teacher=_teacher_part,
    part_problem=_representation_part_problem,
)


# -- steering transfer ---------------------------------------------------------------------------


def _steering_inputs(session) -> Inputs:
    from pytest_analog.layers import best_block_match
    from pytest_analog.steering.transfer import steering_layers

    s = session.analog_config.steering
    teacher = _steering_teacher_inputs(session)
    # the analog layer of each steered teacher layer: the config's, or the CKA best block match (never layer 0)
    best = best_block_match(session.run("representation").cka_matrix) if s.analog_layers == "best_match" else None
    layer_pairs = steering_layers(s, *session.depths, best_match=best)
    args = {key: teacher.args[key] for key in ("behaviours", "map_texts")}
    return Inputs(args={**args, "layer_pairs": layer_pairs}, key={**teacher.key, "layer_pairs": layer_pairs})


def _steering_teacher_inputs(session) -> Inputs:
    from pytest_analog.prompts import load_prompts
    from pytest_analog.steering.behaviours import load_behaviour
    from pytest_analog.steering.transfer import steered_teacher_layers

    s = session.analog_config.steering
    behaviours = [load_behaviour(name) for name in s.behaviours]
    prompts = load_prompts(session.analog_config.prompts.set, s.map_prompts)
    layers = steered_teacher_layers(s, session.depths[0])  # the teacher's depth alone: never the analog's
    return Inputs(
        args={"behaviours": behaviours, "teacher_layers": layers, "map_texts": prompts.texts},
        key={"map_prompts": prompts.sha256, "teacher_layers": layers,
             "behaviours": [hashlib.sha256(repr(b).encode()).hexdigest() for b in behaviours]},
    )


def _steering_teacher(teacher, config, *, behaviours, teacher_layers, map_texts):
    from pytest_analog.steering.teacher import teacher_part

    return teacher_part(teacher, config.steering, behaviours=behaviours, teacher_layers=teacher_layers, map_texts=map_texts)


def _steering_part_problem(part, teacher) -> str | None:
    """The steering part's schema (`steering.teacher.teacher_part`) against the teacher record's depth and width."""
    meta, tensors, width = part.meta, part.tensors, teacher["hidden_size"]
    layers, lengths, cases = meta.get("teacher_layers"), meta.get("map_lengths"), meta.get("behaviours")
    if not (isinstance(layers, list) and all(_count(i) and i <= teacher["num_layers"] for i in layers)):
        return f"data's teacher_layers are not teacher layers 0..{teacher['num_layers']}"
    if not (isinstance(lengths, list) and all(_count(n) for n in lengths)) or not isinstance(meta.get("forward_passes"), dict):
        return "data's map_lengths are not token counts, or its forward_passes not an object"
    if not (isinstance(cases, dict) and all(isinstance(c, dict) and set(c) == {str(i) for i in layers} for c in cases.values())):
        return "data's behaviours do not give a case per steered layer"
    expected = {f"map/{i}": [sum(lengths), width] for i in layers}
    for name, by_layer in cases.items():
        for i, case in by_layer.items():
            if not (isinstance(case, dict) and _count(case.get("train_items")) and isinstance(case.get("curve"), dict)):
                return f"data's case {name}/{i} has no train_items count or curve"
            expected.update({f"{name}/{i}/native": [width], f"{name}/{i}/differences": [case["train_items"], width]})
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if tensor is None or not tensor.is_floating_point() or list(tensor.shape) != shape:
            kind = "missing" if tensor is None else f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"
            return f"tensor {name} is {kind}; the teacher record and the part's data ask for floating point {shape}"
    extra = sorted(set(tensors) - set(expected))
    return f"holds the unexpected tensor {extra[0]}" if extra else None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _steer(pair, part, config, *, behaviours, layer_pairs, map_texts):
    from pytest_analog.steering.transfer import steering_analysis

    progress = progress_bar(len(behaviours) * len(layer_pairs), "steering (behaviour x layer)", unit="case")
    results = steering_analysis(pair, behaviours, layer_pairs, config.steering, map_texts=map_texts, part=part,
                                progress=progress, chance=config.chance)
    progress.close()
    return results


def _steering_results(payload):
    from pytest_analog.steering.transfer import results_from_json

    return results_from_json(payload)


def _steering_section(done: Outcome, config: Config) -> dict[str, Any]:
    from pytest_analog.steering.transfer import layer_rule

    return {"steering": {**done.payload, "cached": done.cached, "layer_rule": layer_rule(config.steering)}}


STEERING = Run(
    "steering",
    needs_teacher=True,  # live: the transferred vector's effect is measured on the teacher
    reads=("steering", "chance.resamples", "chance.confidence", "chance.seed"),
    inputs=_steering_inputs,
    compute=_steer,
    result=_steering_results,
    section=_steering_section,
    # what the teacher half reads: not the analog's layers, map or chance settings
    teacher_reads=("steering.position", "steering.method", "steering.alphas", "steering.from_position", "steering.max_length",
                   "steering.train_items", "steering.eval_items", "steering.batch_size", "steering.seed",
                   "steering.random_vectors"),
    teacher_inputs=_steering_teacher_inputs,
    teacher=_steering_teacher,
    part_problem=_steering_part_problem,
)


# -- lm-eval benchmarks ----------------------------------------------------------------------------


def _benchmark_inputs(session) -> Inputs:
    from pytest_analog.evals import resolve_tasks

    tasks = session.tasks or resolve_tasks(session.analog_config.benchmarks.tasks)
    verbose = session.verbose
    return Inputs(args={"tasks": tasks, "verbose": verbose}, key={"tasks": tasks.sha256})


def _benchmark_teacher_inputs(session) -> Inputs:
    from pytest_analog.versions import package_version

    inputs = _benchmark_inputs(session)  # a reference built on other tasks or another lm-eval is refused
    return Inputs(inputs.args, {**inputs.key, "lm_eval": package_version("lm_eval")})


def _benchmark_teacher(teacher, config, *, tasks, verbose):
    from pytest_analog.evals import teacher_part

    return teacher_part(teacher, config, tasks=tasks, verbose=verbose)


def _benchmarks_part_problem(part, teacher) -> str | None:
    """The benchmarks part: no tensors, and lm-eval's results of the teacher (what `evals.compare` reads)."""
    if part.tensors:
        return f"holds the unexpected tensor {sorted(part.tensors)[0]}"
    missing = [key for key in ("results", "samples", "higher_is_better") if not isinstance(part.meta.get(key), dict)]
    return f"data's {missing[0]} is not an object of lm-eval's results" if missing else None


def _evaluate(pair, part, config, *, tasks, verbose):
    from pytest_analog.evals import analog_results

    return analog_results(pair, part, config, tasks=tasks, verbose=verbose)


def _compared(payload):
    from pytest_analog.evals import compare

    return compare(payload["teacher"], payload["analog"])


def _benchmarks_section(done: Outcome, config: Config) -> dict[str, Any]:
    return {"benchmarks": {
        "lm_eval_version": done.payload["teacher"].get("lm_eval_version"),  # the version that ran (in the key)
        "cached": done.cached,
        "tasks": done.result,
        "results": {role: {k: v for k, v in r.items() if k != "samples"} for role, r in done.payload.items()},
    }}


BENCHMARKS = Run(
    "benchmarks",
    reads=("benchmarks.num_fewshot", "benchmarks.limit", "benchmarks.batch_size", "seed"),
    inputs=_benchmark_inputs,
    compute=_evaluate,
    result=_compared,
    section=_benchmarks_section,
    packages=("lm_eval", "torch", "transformers"),
    teacher_reads=("benchmarks.num_fewshot", "benchmarks.limit", "benchmarks.batch_size", "benchmarks.backend", "seed"),
    teacher_inputs=_benchmark_teacher_inputs,
    teacher=_benchmark_teacher,
    part_problem=_benchmarks_part_problem,
)


RUNS = {run.name: run for run in (REPRESENTATION, STEERING, BENCHMARKS)}

# The run each built-in suite reads (`options.SUITES`); compliance reads the release files only.
SUITE_RUNS: dict[str, str | None] = {
    "representation": "representation",
    "embeddings": "representation",
    "logits": "representation",
    "steering": "steering",
    "benchmarks": "benchmarks",
    "compliance": None,
}
