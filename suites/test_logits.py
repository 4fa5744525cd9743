"""Logit suite: does the analog predict the next token as the teacher does (same tokenizer only)?"""

import pytest


@pytest.mark.parametrize("metric", ["kl", "top1_agreement", "perplexity_ratio"])
def test_logits(metric, analog_measurements, analog_config, fidelity_record):
    bound = getattr(analog_config.criteria, metric)
    threshold = {"min": bound.min} if hasattr(bound, "min") else {"max": bound.max}
    logits = analog_measurements.logits
    if logits is None and None in threshold.values():
        pytest.skip(analog_measurements.notes["logits"])
    fidelity_record(
        metric,
        None if logits is None else logits[metric],
        reason=analog_measurements.notes.get("logits"),
        **threshold,
        gate=bound.gate,
    )
