"""The embeddings suite: is the analog's token geometry the teacher's (Lee et al. 2025)?

It reads the representation suite's capture pass, which samples shared token rows
of both models' input embeddings and unembeddings.
"""

from pathlib import Path

from pytest_analog.gates import Scored
from pytest_analog.suite import Suite
from pytest_analog.suites.embeddings.facts import METRICS
from pytest_analog.suites.embeddings.settings import CHECKS, Embeddings
from pytest_analog.suites.representation import RUN

SUITE = Suite(
    name="embeddings",
    tests="pytest_analog.suites.embeddings.test_embeddings",
    run=RUN,
    settings=Embeddings,
    gates={"embedding_geometry": Scored, "unembedding_geometry": Scored},
    defaults=Path(__file__).with_name("defaults.yaml"),
    checks=CHECKS,
    metrics=METRICS,
    headline="embedding_geometry",
)
