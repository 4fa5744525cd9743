"""The analog half of the steering run: the analog's vectors carried to the teacher, against the teacher's own.

Per steered teacher layer a map from the analog layer paired with it; per
behaviour the analog's vector through that map against the teacher's native
vector from the teacher's part (`teacher.teacher_part`), its direction fidelity,
and with a loaded teacher its dose response on the teacher.
"""

from __future__ import annotations

import torch

from pytest_analog.steering.fidelity import direction_fidelity
from pytest_analog.steering.transfer import (
    NEEDS_TEACHER, TEACHER_ONLY, MapStates, PassCounter, dose_response, fit_maps, transfer_criteria,
)
from pytest_analog.steering.vectors import activations, difference_vector
from pytest_analog.progress import progress_bar
from pytest_analog.suites.steering.names import differences_name, map_name, native_name
from pytest_analog.suites.steering.teacher import teacher_part

def run(pair, part, config, *, behaviours, layer_pairs, map_texts) -> dict:
    """The analog half of the steering run, with a progress bar over its cases."""
    progress = progress_bar(len(behaviours) * len(layer_pairs), "steering (behaviour x layer)", unit="case")
    results = steering_analysis(pair, behaviours, layer_pairs, config.steering, map_texts=map_texts, part=part,
                                progress=progress, chance=config.chance)
    progress.close()
    return results


def steering_analysis(pair, behaviours, layer_pairs: dict[int, int], settings, *, map_texts, part=None, progress=None,
                      chance=None) -> dict:
    """The analog half of the steering measurement: maps per layer pair, then per behaviour and teacher layer
    the mapped analog vector against the teacher's, from the teacher's `Part` (`teacher.teacher_part`).

    With a loaded teacher (``pair.teacher.model``) the transferred vector is also run on it, for the
    transfer ratio and its dose response; without (a teacher reference) those are listed as unmeasured.

    Args:
        pair: a `ModelPair` (its teacher loaded, or read from a reference).
        behaviours: loaded `Behaviour` sets.
        layer_pairs: teacher layer -> analog layer.
        settings: the config's `steering` section.
        map_texts: the neutral prompt texts the maps are fitted on.
        part: the teacher's part over the same inputs; None: computed here on ``pair.teacher``.
        chance: the config's `chance` section (bootstrap draws, confidence, seed of the intervals);
            None: 200 draws, 95 %, seed 0.

    Returns:
        A JSON-ready dict: ``maps`` (held-out FVU and cosine per kind and layer pair) and ``behaviours``
        (per behaviour and teacher layer: the dose-response curves, direction fidelity and the criteria).
    """
    s = settings
    if part is None:
        part = teacher_part(pair.teacher, s, behaviours=behaviours, teacher_layers=sorted(layer_pairs), map_texts=map_texts)
    stored, live = part.meta, pair.teacher.model is not None
    bootstrap = {} if chance is None else {"resamples": chance.resamples or 200, "confidence": chance.confidence, "seed": chance.seed}
    counter = PassCounter(**stored["forward_passes"])
    states = MapStates({i: part.tensors[map_name(i)] for i in layer_pairs}, stored["map_lengths"])
    maps = fit_maps(pair, map_texts, list(layer_pairs.items()), ridge=s.ridge, steps=s.autoencoder_steps, seed=s.seed,
                    max_length=s.max_length, batch_size=s.batch_size, teacher=states)
    counter.add("analog", sum(next(iter(maps.values()))["prompts"]), s.batch_size)
    results = {}
    for behaviour in behaviours:
        train, items = behaviour.train[: s.train_items], behaviour.eval[: s.eval_items]
        texts = [it.positive for it in train] + [it.negative for it in train]
        s_acts = activations(pair.analog, texts, sorted(set(layer_pairs.values())), position=s.position, batch_size=s.batch_size)
        counter.add("analog", len(texts), s.batch_size)
        n = len(train)
        for i, j in layer_pairs.items():
            case = stored["behaviours"][behaviour.name][str(i)]
            native = part.tensors[native_name(behaviour.name, i)].double()
            mapping = maps[(i, j)]["maps"][s.map]
            positive, negative = s_acts[j][:n], s_acts[j][n:]
            mapped = torch.as_tensor(mapping(positive)).double(), torch.as_tensor(mapping(negative)).double()
            transferred = difference_vector(*mapped, s.method)
            curve = case["curve"]
            if live:  # the teacher runs the transferred vector only; the native and random curves are the part's
                more = dose_response(pair.teacher, items, i, {"transferred": transferred}, s.alphas, from_position=s.from_position,
                                     batch_size=s.batch_size, counter=counter, base=(curve["baseline_items"], curve["residual_norm"]))
                curve = {**curve, **{key: {**curve[key], **more[key]} for key in ("probability", "effect", "item_probability")}}
            fidelity = direction_fidelity(
                mapping, positive, negative, part.tensors[differences_name(behaviour.name, i)].double(), native, method=s.method,
                draws=s.random_directions, seed=s.seed, resamples=200 if chance is None else chance.resamples,
                confidence=bootstrap.get("confidence", 0.95),
            )
            results.setdefault(behaviour.name, {})[i] = {
                "teacher_layer": i,
                "analog_layer": j,
                "train_items": case["train_items"],
                "eval_items": case["eval_items"],
                "cosine_native_transferred": fidelity["value"],
                "direction_fidelity": fidelity,
                **curve,
                **transfer_criteria(curve, min_native_effect=s.min_native_effect, **bootstrap),
                **({} if live else {"unmeasured": dict.fromkeys(TEACHER_ONLY, NEEDS_TEACHER)}),
            }
            if progress is not None:
                progress.update(1)
    return {
        "map": s.map,
        "maps": {
            i: {"analog_layer": j, "rows": maps[(i, j)]["rows"], "alignment": maps[(i, j)]["alignment"], **maps[(i, j)]["heldout"]}
            for i, j in layer_pairs.items()
        },
        "behaviours": results,
        "forward_passes": counter.to_dict(),
    }


def results_from_json(data: dict) -> dict:
    """`steering_analysis` results read back from JSON, whose object keys (teacher layers) are strings."""
    return {
        **data,
        "maps": {int(i): m for i, m in data["maps"].items()},
        "behaviours": {name: {int(i): case for i, case in layers.items()} for name, layers in data["behaviours"].items()},
    }
