"""The representation suite: do the analog's hidden states hold the teacher's structure (CKA, kNN)?

Its run is the one capture pass over the prompt set that the embeddings and logits
suites read too: the teacher half (`teacher.teacher_part`) keeps the teacher's
gated-layer states, layer-matrix sample, embedding rows and top-k logits; the
analog half (`analog.measure`) runs the analog (and its chance controls) beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_analog.gates import Scored
from pytest_analog.lazy import Lazy
from pytest_analog.prompts import load_prompts
from pytest_analog.runs import Inputs, Outcome, Run
from pytest_analog.suite import Suite
from pytest_analog.suites.representation import report
from pytest_analog.suites.representation.facts import METRICS
from pytest_analog.suites.representation.settings import CHECKS, CKAGate, Representation

HALVES = "pytest_analog.suites.representation"


def _representation_inputs(session) -> Inputs:
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
    prompts = load_prompts(session.analog_config.prompts.set, session.analog_config.prompts.max_prompts)
    with_logits = _logits_wanted(session)
    given = getattr(getattr(session, "teacher_half", None), "given", None)
    if not with_logits and given is not None and given.has("representation"):  # a part with logits serves too
        with_logits = given.manifest["parts"]["representation"]["key"].get("inputs", {}).get("with_logits", False)
    return Inputs(args={"prompts": prompts, "with_logits": with_logits},
                  key={"prompts": prompts.sha256, "with_logits": with_logits})


def _representation_section(done: Outcome, config) -> dict[str, Any]:
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


def _memory(config, shape) -> dict[str, int]:
    """The representation run's largest arrays in bytes (float64 entries), by the config key that sets each."""
    resamples, layers = config.chance.resamples, shape.gated_layers
    sizes = {
        # counts and weights [B + 1, P] per bootstrap, and a replicate of every metric of every layer
        "chance.resamples": 8 * (2 * (resamples + 1) * (shape.prompts + 1) + resamples * 6 * layers),
        # the permutation null's prompt orders [K, P], and each layer's null values
        "chance.permutations": 8 * config.chance.permutations * (shape.prompts + 6 * layers),
        "prompts.max_prompts": 8 * 3 * shape.prompts**2,  # RBF CKA and mutual kNN over prompts
        "layers.matrix_rows": 8 * 2 * config.layers.matrix_rows**2,
        "embeddings.rows": 8 * 2 * config.embeddings.rows**2,  # pairwise cosines of each model's rows
        "layers.teacher": 8 * 4 * layers * max(shape.widths) ** 2,  # streamed cross sums (4 per layer)
    }
    if resamples:
        sizes["chance.rows"] = 8 * 3 * config.chance.rows**2  # teacher, analog and control Gram matrices
    return sizes


RUN = Run(
    name="representation",
    parallel=True,
    # the analog half: the plan (max_length, skip_first), batches, the bootstrap sample (seed), massive rows,
    # the layer map, chance and metric settings, the geometry's measurable minimum
    reads=("prompts.max_length", "batch_size", "seed", "positions", "layers.teacher", "layers.map", "chance",
           "representation", "embeddings.min_rows"),
    inputs=_representation_inputs,
    compute=Lazy(f"{HALVES}.analog:run"),
    result=Lazy(f"{HALVES}.analog:Measurements.from_dict"),
    section=_representation_section,
    teacher_reads=("prompts.max_length", "batch_size", "seed", "positions.skip_first", "layers.teacher",
                   "layers.matrix_rows", "embeddings.rows", "logits.top_k", "reference.dtype"),
    teacher_inputs=_representation_teacher_inputs,
    teacher=Lazy(f"{HALVES}.teacher:teacher_part"),
    part_problem=Lazy(f"{HALVES}.teacher:part_problem"),
    memory=_memory,
)


SUITE = Suite(
    name="representation",
    tests="pytest_analog.suites.representation.test_representation",
    run=RUN,
    settings=Representation,
    gates={"cka": CKAGate, "rbf_cka": Scored, "mutual_knn": Scored},
    defaults=Path(__file__).with_name("defaults.yaml"),
    checks=CHECKS,
    metrics=METRICS,
    headline="cka",
    sections=report.SECTIONS,
    plugin="pytest_analog.suites.representation.fixtures",
)
