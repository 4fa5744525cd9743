"""The steering suite: does a steering vector found on the analog move the teacher as the teacher's own does?

Its run's teacher half (`teacher.teacher_part`) keeps the teacher's native vectors,
their dose-response curves and the states the maps are fitted to; the analog half
(`analog.steering_analysis`) carries the analog's vectors across. `fixtures` gives
researchers ``steering_vector`` and ``steering_map``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pytest_analog.gates import AtLeast, AtMost, Scored
from pytest_analog.layers import best_block_match
from pytest_analog.lazy import Lazy
from pytest_analog.prompts import load_prompts
from pytest_analog.runs import Inputs, Outcome, Run
from pytest_analog.suite import Suite
from pytest_analog.suites.steering import report
from pytest_analog.suites.steering.facts import METRICS
from pytest_analog.suites.steering.layers import layer_rule, steered_teacher_layers, steering_layers
from pytest_analog.suites.steering.settings import CHECKS, Steering

HALVES = "pytest_analog.suites.steering"
load_behaviour = Lazy("pytest_analog.steering.behaviours:load_behaviour")


def _steering_inputs(session) -> Inputs:
    s = session.analog_config.steering
    teacher = _steering_teacher_inputs(session)
    # the analog layer of each steered teacher layer: the config's, or the CKA best block match (never layer 0)
    best = best_block_match(session.run("representation").cka_matrix) if s.analog_layers == "best_match" else None
    layer_pairs = steering_layers(s, *session.depths, best_match=best)
    args = {key: teacher.args[key] for key in ("behaviours", "map_texts")}
    return Inputs(args={**args, "layer_pairs": layer_pairs}, key={**teacher.key, "layer_pairs": layer_pairs})


def _steering_teacher_inputs(session) -> Inputs:
    s = session.analog_config.steering
    behaviours = [load_behaviour(name) for name in s.behaviours]
    prompts = load_prompts(session.analog_config.prompts.set, s.map_prompts)
    layers = steered_teacher_layers(s, session.depths[0])  # the teacher's depth alone: never the analog's
    return Inputs(
        args={"behaviours": behaviours, "teacher_layers": layers, "map_texts": prompts.texts},
        key={"map_prompts": prompts.sha256, "teacher_layers": layers,
             "behaviours": [hashlib.sha256(repr(b).encode()).hexdigest() for b in behaviours]},
    )


def _steering_section(done: Outcome, config) -> dict[str, Any]:
    return {"steering": {**done.payload, "cached": done.cached, "layer_rule": layer_rule(config.steering)}}


def _memory(config, shape) -> dict[str, int]:
    """The steering run's largest arrays in bytes (float64 entries), by the config key that sets each."""
    s, resamples = config.steering, config.chance.resamples
    return {
        "steering.random_directions": 8 * ((resamples + 1) * s.random_directions + s.random_directions * max(shape.widths)),
        "steering.eval_items": 8 * 2 * (resamples + 1) * s.eval_items,
    }


RUN = Run(
    name="steering",
    needs_teacher=True,  # live: the transferred vector's effect is measured on the teacher
    reads=("steering", "chance.resamples", "chance.confidence", "chance.seed"),
    inputs=_steering_inputs,
    compute=Lazy(f"{HALVES}.analog:run"),
    result=Lazy(f"{HALVES}.analog:results_from_json"),
    section=_steering_section,
    # what the teacher half reads: not the analog's layers, map or chance settings
    teacher_reads=("steering.position", "steering.method", "steering.alphas", "steering.from_position", "steering.max_length",
                   "steering.train_items", "steering.eval_items", "steering.batch_size", "steering.seed",
                   "steering.random_vectors"),
    teacher_inputs=_steering_teacher_inputs,
    teacher=Lazy(f"{HALVES}.teacher:run"),
    part_problem=Lazy(f"{HALVES}.teacher:part_problem"),
    memory=_memory,
)


def _check(session) -> None:
    """Bad steering layers or behaviour files are usage errors, found before any model loads; against a
    reference whose analog layers are the CKA best match, the representation part is needed too."""
    s = session.analog_config.steering
    steering_layers(s, *session.depths, best_match=[0] * (session.depths[0] + 1))
    for name in s.behaviours:
        load_behaviour(name)
    if not session.teacher_half.live and s.analog_layers == "best_match":
        session.teacher_half.part(session.runs["representation"])


SUITE = Suite(
    name="steering",
    tests="pytest_analog.suites.steering.test_steering",
    run=RUN,
    settings=Steering,
    gates={"transfer_ratio": AtLeast, "transfer_gap": AtMost, "spearman": AtLeast, "random_control": AtMost,
           "direction_fidelity": Scored, "map_fvu": AtMost, "map_cosine": AtLeast},
    defaults=Path(__file__).with_name("defaults.yaml"),
    checks=CHECKS,
    metrics=METRICS,
    sections=report.SECTIONS,
    plugin="pytest_analog.suites.steering.fixtures",
    check=_check,
)
