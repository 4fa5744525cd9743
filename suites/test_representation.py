"""Representation suite: does each teacher layer have a faithful counterpart in the analog?

One criterion per gated teacher layer (``layers.teacher`` in the config) and
metric; the analog layer compared is ``layers.map`` (proportional depth by
default). Layer i is ``hidden_states[i]``: 0 is the embedding output. Each
value stands beside its chance level (the same metric against a control
without learned structure) and a bootstrap interval over prompts.
"""


def _layer_criterion(metric, teacher_layer, analog_measurements, analog_config, fidelity_record, **details):
    m = analog_measurements
    criterion = getattr(analog_config.criteria, metric)
    fidelity_record(
        metric,
        getattr(m, metric)[teacher_layer],
        min=criterion.min,
        score=criterion.score,
        **m.against_chance(metric, teacher_layer),
        reason=m.notes.get(metric),
        teacher_layer=teacher_layer,
        student_layer=m.mapped[teacher_layer],
        best_student_layer=m.best_match[teacher_layer],
        **details,
    )


def test_cka(teacher_layer, analog_measurements, analog_config, fidelity_record):
    influence = analog_measurements.massive.get("influence", {}).get(teacher_layer)
    _layer_criterion("cka", teacher_layer, analog_measurements, analog_config, fidelity_record, influence=influence)


def test_rbf_cka(teacher_layer, analog_measurements, analog_config, fidelity_record):
    _layer_criterion("rbf_cka", teacher_layer, analog_measurements, analog_config, fidelity_record)


def test_mutual_knn(teacher_layer, analog_measurements, analog_config, fidelity_record):
    _layer_criterion("mutual_knn", teacher_layer, analog_measurements, analog_config, fidelity_record)
