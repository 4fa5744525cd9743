"""What a compliant analog release contains (arXiv 2510.14053), one check per requirement.

Each check reads the analog's release files (and, for the architecture family,
both models' configs) and returns a `Check`: whether it passed and one line
saying what was found, or what is missing and where it was looked for.

The release folder is the analog's model directory, or the hub snapshot of a
hub id (its card, licence and scripts are fetched on demand; nothing is run).
A single ``.gguf`` file carries no model card, licence file or scripts: those
checks report that they cannot be checked (the criterion then fails when it is
gated); its licence is read from the GGUF metadata (``general.license``).

What satisfies each check:

- model card: ``README.md`` (or ``MODEL_CARD.md``) in the release folder with, for
  each topic of ``compliance.model_card.sections``, a Markdown heading that contains
  one of the topic's keywords as whole words and has text under it. The data
  topic is also satisfied by a non-empty ``datasets:`` list in the card's YAML
  front matter.
- licence: ``license:`` in the model card's front matter (an SPDX-style id as on the
  hub, e.g. ``apache-2.0``), or, when absent or ``other``, the text of a
  ``LICENSE``/``LICENCE``/``COPYING`` file (``.md``/``.txt`` too), recognised for
  Apache-2.0, MIT, BSD-2/3-Clause, ISC, BSL-1.0, Unlicense, CC0-1.0, CC-BY-4.0.
- training code: a file matching ``compliance.training_code.files`` anywhere in the
  release folder (scripts, notebooks, a distillation or training config), or a
  model-card section named by ``compliance.training_code.sections`` that holds a
  link or a fenced code block.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pytest_analog.criterion import Measured
from pytest_analog import models
from pytest_analog.models import ModelSource

CARD_NAMES = ("README.md", "MODEL_CARD.md")
LICENSE_STEMS = ("LICENSE", "LICENCE", "COPYING")
DAYS_PER_MONTH = 365.25 / 12
# Fetched from the hub for a hub id besides what loading needs; text only, never executed.
_RELEASE_PATTERNS = ["*.md", "LICENSE*", "LICENCE*", "COPYING*", "*.py", "*.sh", "*.ipynb", "*.yaml", "*.yml", "*.toml"]
# Licence texts: SPDX id -> phrases that all appear in it (compared with whitespace collapsed).
_LICENSE_TEXTS = [
    ("apache-2.0", ("Apache License", "Version 2.0")),
    ("mit", ("Permission is hereby granted, free of charge",)),
    ("bsd-3-clause", ("Redistribution and use in source and binary forms", "Neither the name")),
    ("bsd-2-clause", ("Redistribution and use in source and binary forms",)),
    ("isc", ("Permission to use, copy, modify, and/or distribute this software for any purpose",)),
    ("bsl-1.0", ("Boost Software License - Version 1.0",)),
    ("unlicense", ("This is free and unencumbered software released into the public domain",)),
    ("cc0-1.0", ("CC0 1.0 Universal",)),
    ("cc-by-4.0", ("Attribution 4.0 International",)),
]


@dataclass(frozen=True)
class Check:
    """The outcome of one compliance check."""

    passed: bool | None  # None: could not be checked (see message)
    message: str
    value: float | None = None  # a measured quantity, for the numeric checks

    @property
    def measured(self) -> Measured:
        """What a criterion records: ``value`` for a numeric check, else 1.0 passed, 0.0 failed, None
        not checkable; the message as its reason."""
        score = self.value if self.value is not None else None if self.passed is None else float(self.passed)
        return Measured(score, reason=self.message)


@dataclass(frozen=True)
class Release:
    """Where an analog's release files are looked for."""

    ref: str
    folder: Path | None  # None: nothing to look in (a lone .gguf file, or a hub fetch that failed)
    why_none: str = ""
    gguf: Path | None = None

    @property
    def card(self) -> Path | None:
        return next((self.folder / n for n in CARD_NAMES if self.folder and (self.folder / n).is_file()), None)


def release_of(source: ModelSource) -> Release:
    """The release folder of a resolved model (fetching a hub model's card, licence and scripts)."""
    if source.kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            return Release(source.ref, Path(snapshot_download(source.ref, allow_patterns=_RELEASE_PATTERNS)))
        except Exception as exc:  # offline or gated: say so, the checks then cannot pass
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return Release(source.ref, None, f"could not fetch the release files of '{source.ref}' from the hub ({first})")
    gguf = source.directory / source.gguf_file if source.gguf_file else None
    if gguf is not None and Path(source.ref).expanduser().is_file():
        return Release(
            source.ref, None, f"{source.ref} is a single .gguf file, which carries no {{what}}; "
            "give the release folder (the .gguf with its README.md and LICENSE) instead", gguf
        )
    return Release(source.ref, source.directory, gguf=gguf)


def _unavailable(release: Release, what: str) -> Check:
    return Check(None, "cannot check: " + release.why_none.replace("{what}", what))


# -- size, family, weights ---------------------------------------------------------------


def parameter_fraction(infos: dict) -> Check:
    """The analog's size as a fraction of the teacher's, from the models' records (``{"teacher": info, "analog": info}``)."""
    fraction = models.parameter_fraction(infos)
    teacher, analog = infos["teacher"]["parameters"], infos["analog"]["parameters"]
    return Check(None, f"analog has {analog:,} parameters, {fraction:.2%} of the teacher's {teacher:,}", fraction)


def same_family(t: str, a: str) -> Check:
    """Same architecture family: the two models' configs name the same ``model_type`` (``t`` teacher, ``a`` analog)."""
    if t == a:
        return Check(True, f"both models are of the '{t}' family (config model_type)")
    return Check(False, f"the analog's family is '{a}' but the teacher's is '{t}' (config model_type)")


def safetensors_weights(source: ModelSource) -> Check:
    """Every weight file of the analog is a ``.safetensors`` file."""
    weights = source.weight_files()
    other = [p.name for p in weights if p.suffix != ".safetensors"]
    if weights and not other:
        return Check(True, f"weights are safetensors ({', '.join(p.name for p in weights)})")
    found = ", ".join(other) if other else "no weight files"
    return Check(
        False,
        f"weights are not all safetensors: found {found} in {source.directory}; "
        "convert them with safetensors (save_pretrained(..., safe_serialization=True))",
    )


# -- model card, licence, training code ------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """A model card: YAML front matter and Markdown sections."""

    metadata: dict
    sections: list[tuple[str, str]]  # (heading, text under it, subsections included)
    problem: str = ""  # why the front matter could not be read

    @classmethod
    def read(cls, path: Path) -> Card:
        text = path.read_text(encoding="utf-8", errors="replace")
        metadata, problem = {}, ""
        match = re.match(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|\Z)", text, re.DOTALL)
        if match:
            text = text[match.end():]
            try:
                data = yaml.safe_load(match.group(1))
            except yaml.YAMLError as exc:
                data, problem = None, f"its front matter is not valid YAML ({str(exc).splitlines()[0]})"
            if isinstance(data, dict):
                metadata = data
            elif not problem and data is not None:
                problem = "its front matter is not a mapping of keys"
        return cls(metadata, _sections(text), problem)

    def section(self, keywords) -> str | None:
        """The first heading that holds one of ``keywords`` as whole words and has text under it."""
        for heading, body in self.sections:
            if body.strip() and _mentions(heading, keywords):
                return heading
        return None


def _mentions(heading: str, keywords) -> bool:
    """True when ``heading`` holds one of ``keywords`` as whole words, in any case."""
    return any(re.search(rf"\b{re.escape(k)}\b", heading, re.IGNORECASE) for k in keywords)


def _sections(markdown: str) -> list[tuple[str, str]]:
    """ATX headings (outside code fences) with the text up to the next heading of the same or a higher level."""
    headings, fenced = [], False
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*(```|~~~)", line):
            fenced = not fenced
        match = None if fenced else re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match:
            headings.append((i, len(match.group(1)), match.group(2)))
    sections = []
    for n, (i, level, title) in enumerate(headings):
        end = next((j for j, lv, _ in headings[n + 1:] if lv <= level), len(lines))
        body = [ln for ln in lines[i + 1:end] if not re.match(r"#{1,6}\s", ln)]
        sections.append((title, "\n".join(body)))
    return sections


def model_card(release: Release, topics: dict[str, list[str]]) -> Check:
    """A model card with a section for each topic (architecture, training setup, data, intended use)."""
    if release.folder is None:
        return _unavailable(release, "model card")
    if release.card is None:
        return Check(False, f"no model card: looked for {' or '.join(CARD_NAMES)} in {release.folder}")
    card = Card.read(release.card)
    found, missing = [], []
    for topic, keywords in topics.items():
        heading = card.section(keywords)
        if heading is None and topic == "data" and card.metadata.get("datasets"):
            heading = "front matter 'datasets'"
        (found if heading else missing).append(f"{topic} ('{heading}')" if heading else topic)
    if missing:
        wanted = "; ".join(f"{t}: a heading with {' / '.join(repr(k) for k in topics[t])}" for t in missing)
        return Check(False, f"model card {release.card} lacks a section on {', '.join(missing)} (wanted {wanted}, with text under it)")
    return Check(True, f"model card {release.card.name} covers {', '.join(found)}")


def license_of(release: Release) -> tuple[str | None, str]:
    """The licence id (lower case) and where it was read; None and where it was looked for when unknown."""
    if release.folder is None:
        if release.gguf is not None:
            return _gguf_license(release.gguf)
        return None, release.why_none.replace("{what}", "licence")
    looked = []
    if release.card is not None:
        card = Card.read(release.card)
        value = card.metadata.get("license")
        if isinstance(value, str) and value.strip().lower() not in ("", "other", "unknown"):
            return value.strip().lower(), f"'license:' in the front matter of {release.card.name}"
        looked.append(f"'license:' in the front matter of {release.card}" + (f" ({card.problem})" if card.problem else ""))
    else:
        looked.append(f"{' or '.join(CARD_NAMES)} in {release.folder}")
    files = sorted(p for p in release.folder.iterdir() if p.is_file() and p.name.upper().split(".")[0] in LICENSE_STEMS)
    for path in files:
        text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
        for spdx, phrases in _LICENSE_TEXTS:
            if all(p.lower() in text.lower() for p in phrases):
                return spdx, f"the text of {path.name}"
        looked.append(f"{path} (not a licence text pytest-analog recognises)")
    if not files:
        looked.append(f"a LICENSE, LICENCE or COPYING file in {release.folder}")
    return None, "looked for " + " and ".join(looked)


def _gguf_license(path: Path) -> tuple[str | None, str]:
    from gguf import GGUFReader

    field = GGUFReader(path).get_field("general.license")
    if field is None:
        return None, f"{path.name} is a single .gguf file without 'general.license' metadata and carries no LICENSE file"
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace").strip().lower(), f"'general.license' in {path.name}"


def license_check(release: Release, allowed: list[str]) -> Check:
    """A permissive licence, read from the model card metadata or a LICENSE file."""
    spdx, where = license_of(release)
    if spdx is None:
        return Check(False if release.folder else None, f"no licence found: {where}")
    if spdx in {a.lower() for a in allowed}:
        return Check(True, f"licence {spdx} (from {where}) is permissive")
    return Check(False, f"licence '{spdx}' (from {where}) is not in compliance.license.allowed ({', '.join(allowed)})")


def training_code(release: Release, patterns: list[str], sections: list[str]) -> Check:
    """The distillation or training scripts, or their documentation, are part of the release."""
    if release.folder is None:
        return _unavailable(release, "training scripts")
    for path in sorted(release.folder.rglob("*")):
        relative = path.relative_to(release.folder)
        hidden = any(p.startswith(".") for p in relative.parts)
        if not hidden and path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            return Check(True, f"training code or config {relative} is in the release")
    if release.card is not None:
        card = Card.read(release.card)
        for heading, body in card.sections:
            if _mentions(heading, sections) and re.search(r"https?://|```|~~~", body):
                return Check(True, f"model card section '{heading}' documents the training code (link or code block)")
    return Check(
        False,
        f"no training code: no file matching {', '.join(patterns)} in {release.folder}, and no model-card section "
        f"named {' / '.join(repr(s) for s in sections)} with a link or code block",
    )


# -- release lag -------------------------------------------------------------------------------


def release_lag(teacher_date: str, analog_date: str) -> Check:
    """Months from the teacher's release to the analog's (a month = 365.25/12 days)."""
    t, a = datetime.date.fromisoformat(teacher_date), datetime.date.fromisoformat(analog_date)
    months = (a - t).days / DAYS_PER_MONTH
    return Check(None, f"analog released {months:.2f} months after the teacher ({teacher_date} -> {analog_date})", months)


__all__ = [
    "Card", "Check", "Release", "license_check", "license_of", "model_card", "parameter_fraction",
    "release_lag", "release_of", "safetensors_weights", "same_family", "training_code",
]
