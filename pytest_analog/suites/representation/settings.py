"""Settings and gates of the representation suite (its config section and ``gates.cka`` ...)."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_analog.gates import Scored


@dataclass(frozen=True)
class CKASettings:
    debiased: bool


@dataclass(frozen=True)
class RBFSettings:
    sigma_frac: float
    debiased: bool


@dataclass(frozen=True)
class KNNSettings:
    k: int


@dataclass(frozen=True)
class Representation:
    """Settings of the representation metrics (read by the capture pass; thresholds are in `Gates`)."""

    cka: CKASettings
    rbf_cka: RBFSettings
    mutual_knn: KNNSettings


@dataclass(frozen=True)
class CKAGate(Scored):
    min_prompts: int  # fewer prompts: each CKA criterion is flagged "few prompts" (the verdict stands)


# Value checks beyond the type (see `config`): dotted key -> (test, what is expected).
CHECKS = {
    "gates.cka.min_prompts": (lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
    "representation.mutual_knn.k": (lambda v: 1 <= v <= 1_000, "an integer from 1 to 1,000"),
    "representation.rbf_cka.sigma_frac": (lambda v: v > 0, "a number > 0"),
}
