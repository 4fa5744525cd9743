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

from pytest_analog.part import Part
from pytest_analog.steering.transfer import PassCounter, dose_response, map_states, random_direction, random_name
from pytest_analog.steering.vectors import activations, difference_vector
from pytest_analog.suites.steering.names import differences_name, map_name, native_name


def run(teacher, config, *, behaviours, teacher_layers, map_texts) -> Part:
    """The teacher half of the steering run (`teacher_part` with the config's ``steering`` section)."""
    return teacher_part(teacher, config.steering, behaviours=behaviours, teacher_layers=teacher_layers, map_texts=map_texts)


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
    tensors = {map_name(i): states.states[i] for i in teacher_layers}
    cases: dict[str, dict] = {}
    for behaviour in behaviours:
        train, items = behaviour.train[: s.train_items], behaviour.eval[: s.eval_items]
        texts = [it.positive for it in train] + [it.negative for it in train]
        acts = activations(teacher, texts, teacher_layers, position=s.position, batch_size=s.batch_size)
        counter.add("teacher", len(texts), s.batch_size)
        n = len(train)
        for i in teacher_layers:
            native = difference_vector(acts[i][:n], acts[i][n:], s.method)
            tensors[native_name(behaviour.name, i)] = native
            tensors[differences_name(behaviour.name, i)] = acts[i][:n] - acts[i][n:]
            vectors = {"native": native, **{random_name(v): random_direction(len(native), s.seed + v)
                                            for v in range(s.random_vectors)}}
            curve = dose_response(teacher, items, i, vectors, s.alphas, from_position=s.from_position,
                                  batch_size=s.batch_size, counter=counter)
            cases.setdefault(behaviour.name, {})[str(i)] = {"train_items": n, "eval_items": len(items), "curve": curve}
    meta = {"teacher_layers": list(teacher_layers), "map_lengths": states.lengths, "behaviours": cases,
            "forward_passes": counter.to_dict()}
    return Part(tensors, meta)


def part_problem(part, teacher) -> str | None:
    """The first way a stored part does not fit `teacher_part`'s schema and the teacher record's depth and width, or None."""
    meta, tensors, width = part.meta, part.tensors, teacher["hidden_size"]
    layers, lengths, cases = meta.get("teacher_layers"), meta.get("map_lengths"), meta.get("behaviours")
    if not (isinstance(layers, list) and all(_count(i) and i <= teacher["num_layers"] for i in layers)):
        return f"data's teacher_layers are not teacher layers 0..{teacher['num_layers']}"
    if not (isinstance(lengths, list) and all(_count(n) for n in lengths)) or not isinstance(meta.get("forward_passes"), dict):
        return "data's map_lengths are not token counts, or its forward_passes not an object"
    if not (isinstance(cases, dict) and all(isinstance(c, dict) and set(c) == {str(i) for i in layers} for c in cases.values())):
        return "data's behaviours do not give a case per steered layer"
    expected = {map_name(i): [sum(lengths), width] for i in layers}
    for name, by_layer in cases.items():
        for i, case in by_layer.items():
            if not (isinstance(case, dict) and _count(case.get("train_items")) and isinstance(case.get("curve"), dict)):
                return f"data's case {name}/{i} has no train_items count or curve"
            expected.update({native_name(name, i): [width], differences_name(name, i): [case["train_items"], width]})
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if tensor is None or not tensor.is_floating_point() or list(tensor.shape) != shape:
            kind = "missing" if tensor is None else f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"
            return f"tensor {name} is {kind}; the teacher record and the part's data ask for floating point {shape}"
    extra = sorted(set(tensors) - set(expected))
    return f"holds the unexpected tensor {extra[0]}" if extra else None


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
