"""Representation suite: does each teacher layer have a faithful counterpart in the analog?

One criterion per gated teacher layer (``layers.teacher`` in the config) and
metric; the analog layer compared is ``layers.map`` (proportional depth by
default). Layer i is ``hidden_states[i]``: 0 is the embedding output. Each
value stands beside its chance level (the same metric against a control
without learned structure) and a bootstrap interval over prompts.
"""


def _few_prompts(n_prompts: int, minimum: int) -> dict:
    """The caveat of token-level CKA over fewer prompts than ``criteria.cka.min_prompts``, as a detail."""
    if n_prompts >= minimum:
        return {}
    return {"few_prompts": f"only {n_prompts} prompts (criteria.cka.min_prompts: {minimum}): token-level CKA counts "
                           f"the tokens of one prompt as independent and reads about 1/P = {1 / n_prompts:.2g} too high"}


def _layer_criterion(metric, teacher_layer, analog_measurements, analog_config, fidelity_record, **details):
    m = analog_measurements
    criterion = getattr(analog_config.criteria, metric)
    caveat = _few_prompts(m.capture["n_prompts"], criterion.min_prompts) if metric == "cka" else {}
    fidelity_record(
        metric,
        getattr(m, metric)[teacher_layer],
        min=criterion.min,
        score=criterion.score,
        gate=criterion.gate,
        **m.against_chance(metric, teacher_layer),
        reason=m.notes.get(metric),
        teacher_layer=teacher_layer,
        student_layer=m.mapped[teacher_layer],
        best_student_layer=m.best_match[teacher_layer],
        **caveat,
        **details,
    )


def test_cka(teacher_layer, analog_measurements, analog_config, fidelity_record):
    influence = analog_measurements.massive.get("influence", {}).get(teacher_layer)
    _layer_criterion("cka", teacher_layer, analog_measurements, analog_config, fidelity_record, influence=influence)


def test_rbf_cka(teacher_layer, analog_measurements, analog_config, fidelity_record):
    _layer_criterion("rbf_cka", teacher_layer, analog_measurements, analog_config, fidelity_record)


def test_mutual_knn(teacher_layer, analog_measurements, analog_config, fidelity_record):
    _layer_criterion("mutual_knn", teacher_layer, analog_measurements, analog_config, fidelity_record)
