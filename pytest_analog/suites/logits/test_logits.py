"""Logit suite: does the analog predict the next token as the teacher does (same tokenizer only)?"""

import pytest

from pytest_analog.criterion import Measured


@pytest.mark.parametrize("metric", ["kl", "top1_agreement", "perplexity_ratio"])
def test_logits(metric, analog_measurements, analog_config, fidelity_record):
    logits, reason = analog_measurements.logits, analog_measurements.notes.get("logits")
    if logits is None and not analog_config.gates.gate(metric).gated:
        pytest.skip(reason)
    fidelity_record.configured(metric, Measured(None if logits is None else logits[metric], reason=reason))
