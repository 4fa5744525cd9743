"""Settings of the compliance suite: what its checks look for (whether each is required is under gates)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCardCheck:
    sections: dict[str, list[str]]


@dataclass(frozen=True)
class LicenseCheck:
    allowed: list[str]


@dataclass(frozen=True)
class TrainingCodeCheck:
    files: list[str]
    sections: list[str]


@dataclass(frozen=True)
class ReleaseDates:
    teacher: str | None
    analog: str | None


@dataclass(frozen=True)
class Compliance:
    """What the compliance checks look for (whether each is required is in `Gates`)."""

    model_card: ModelCardCheck
    license: LicenseCheck
    training_code: TrainingCodeCheck
    release_dates: ReleaseDates


def _is_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


# Value checks beyond the type (see `config`): dotted key -> (test, what is expected).
CHECKS = {
    "compliance.release_dates.teacher": (lambda v: v is None or _is_date(v), "null or a date YYYY-MM-DD"),
    "compliance.release_dates.analog": (lambda v: v is None or _is_date(v), "null or a date YYYY-MM-DD"),
}
