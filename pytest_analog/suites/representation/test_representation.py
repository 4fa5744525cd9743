"""Representation suite: does each teacher layer have a faithful counterpart in the analog?

One criterion per gated teacher layer (``layers.teacher`` in the config) and
metric; the analog layer compared is ``layers.map`` (proportional depth by
default). Layer i is ``hidden_states[i]``: 0 is the embedding output. Each
value stands beside its chance level (the same metric against a control
without learned structure) and a bootstrap interval over prompts.
"""

def _few_prompts(n_prompts: int, minimum: int) -> dict:
    """The caveat of token-level CKA over fewer prompts than ``gates.cka.min_prompts``, as a detail."""
    if n_prompts >= minimum:
        return {}
    return {"few_prompts": f"only {n_prompts} prompts (gates.cka.min_prompts: {minimum}): token-level CKA counts "
                           f"the tokens of one prompt as independent and reads about 1/P = {1 / n_prompts:.2g} too high"}


def _layer_criterion(metric, teacher_layer, m, fidelity_record, **details):
    fidelity_record.configured(
        metric,
        m.measured(metric, teacher_layer),
        teacher_layer=teacher_layer,
        analog_layer=m.mapped[teacher_layer],
        best_analog_layer=m.best_match[teacher_layer],
        calibration=m.calibrated(metric, teacher_layer),
        **details,
    )


def test_cka(teacher_layer, analog_measurements, analog_config, fidelity_record):
    m = analog_measurements
    caveat = _few_prompts(m.capture["n_prompts"], analog_config.gates.cka.min_prompts)
    influence = m.massive.get("influence", {}).get(teacher_layer)
    _layer_criterion("cka", teacher_layer, m, fidelity_record, **caveat, influence=influence,
                     best_match_calibration=m.calibrated("best_match", teacher_layer))


def test_rbf_cka(teacher_layer, analog_measurements, fidelity_record):
    _layer_criterion("rbf_cka", teacher_layer, analog_measurements, fidelity_record)


def test_mutual_knn(teacher_layer, analog_measurements, fidelity_record):
    _layer_criterion("mutual_knn", teacher_layer, analog_measurements, fidelity_record)
