"""The logits suite: does the analog predict the next token as the teacher does (same tokenizer only)?

It reads the representation suite's capture pass, whose teacher half keeps the
teacher's top-k next-token log-probabilities.
"""

from pathlib import Path

from pytest_analog.gates import AtLeast, AtMost
from pytest_analog.suite import Suite
from pytest_analog.suites.logits.facts import METRICS
from pytest_analog.suites.logits.settings import CHECKS, Logits
from pytest_analog.suites.representation import RUN

SUITE = Suite(
    name="logits",
    tests="pytest_analog.suites.logits.test_logits",
    run=RUN,
    settings=Logits,
    gates={"kl": AtMost, "top1_agreement": AtLeast, "perplexity_ratio": AtMost},
    defaults=Path(__file__).with_name("defaults.yaml"),
    checks=CHECKS,
    metrics=METRICS,
    headline="top1_agreement",
)
