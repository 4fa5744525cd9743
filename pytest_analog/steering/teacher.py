"""The teacher half of the steering run: what the teacher contributes, computed once where it lives.

Per behaviour and steered teacher layer: the native vector from the train items,
the per-pair activation differences it is computed from (for intervals over
pairs), and the native and equal-norm random dose-response curves over the eval
items (``steering.random_vectors`` random vectors: "random", "random:1", ...). Per steered layer: the teacher's hidden states at every token of each
map-fitting prompt, from which the analog half takes exactly the rows it pairs
with the analog's (`transfer.fit_maps`). Nothing here depends on the analog: the
analog layer of each steered layer is the analog half's choice.
"""

from __future__ import annotations

from pytest_analog.reference.store import Part
from pytest_analog.steering.transfer import PassCounter, dose_response, map_states, random_direction, random_name
from pytest_analog.steering.vectors import activations, difference_vector


def teacher_part(teacher, settings, *, behaviours, teacher_layers, map_texts) -> Part:
    """The teacher's `Part` of the steering run (``settings``: the config's ``steering`` section).

    Tensors: ``map/{layer}`` [tokens of all map prompts, d], ``{behaviour}/{layer}/native`` [d] and
    ``{behaviour}/{layer}/differences`` [train pairs, d]. Meta: the layers, each map prompt's token
    count, each case's dose-response curves (`transfer.dose_response`) and the forward passes.
    """
    s = settings
    counter = PassCounter()
    states = map_states(teacher, map_texts, teacher_layers, max_length=s.max_length, batch_size=s.batch_size)
    counter.add("teacher", len(map_texts), s.batch_size)
    tensors = {f"map/{i}": states.states[i] for i in teacher_layers}
    cases: dict[str, dict] = {}
    for behaviour in behaviours:
        train, items = behaviour.train[: s.train_items], behaviour.eval[: s.eval_items]
        texts = [it.positive for it in train] + [it.negative for it in train]
        acts = activations(teacher, texts, teacher_layers, position=s.position, batch_size=s.batch_size)
        counter.add("teacher", len(texts), s.batch_size)
        n = len(train)
        for i in teacher_layers:
            native = difference_vector(acts[i][:n], acts[i][n:], s.method)
            tensors[f"{behaviour.name}/{i}/native"] = native
            tensors[f"{behaviour.name}/{i}/differences"] = acts[i][:n] - acts[i][n:]
            vectors = {"native": native, **{random_name(v): random_direction(len(native), s.seed + v)
                                            for v in range(s.random_vectors)}}
            curve = dose_response(teacher, items, i, vectors, s.alphas, from_position=s.from_position,
                                  batch_size=s.batch_size, counter=counter)
            cases.setdefault(behaviour.name, {})[str(i)] = {"train_items": n, "eval_items": len(items), "curve": curve}
    meta = {"teacher_layers": list(teacher_layers), "map_lengths": states.lengths, "behaviours": cases,
            "forward_passes": counter.to_dict()}
    return Part(tensors, meta)
