"""Prompt sets: the texts both models read, shipped in ``fixtures/prompts`` or given as a file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pytest_analog.errors import AnalogError
from pytest_analog.resources import shipped


@dataclass(frozen=True)
class PromptSet:
    name: str
    texts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """What identifies the set in cache keys and references: its texts, not its name or file path."""
        return hashlib.sha256(json.dumps(self.texts).encode()).hexdigest()


def shipped_prompt_sets() -> list[str]:
    """Names of the prompt sets that ship with the package."""
    folder = shipped("fixtures") / "prompts"
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl"))


def load_prompts(name_or_path: str, max_prompts: int | None = None) -> PromptSet:
    """Load a shipped set by name, or a ``.jsonl`` (``{"text": ...}`` per line) or ``.txt`` (one per line) file.

    Raises:
        AnalogError: unknown name, missing or malformed file, or no prompts.
    """
    path = Path(name_or_path).expanduser()
    if not path.suffix:
        path = shipped("fixtures") / "prompts" / f"{name_or_path}.jsonl"
        if not path.is_file():
            known = ", ".join(shipped_prompt_sets())
            raise AnalogError(f"unknown prompt set '{name_or_path}'; shipped sets: {known}, or give a .jsonl/.txt path")
        text, source = _read(path), f"prompt set '{name_or_path}'"
    elif path.suffix not in (".jsonl", ".txt"):
        raise AnalogError(f"prompt file {path} must be .jsonl (one {{\"text\": ...}} per line) or .txt (one per line)")
    elif not path.is_file():
        raise AnalogError(f"prompt file {path} does not exist")
    else:
        text, source = _read(path), f"prompt file {path}"
    lines = [line for line in text.splitlines() if line.strip()]
    texts = [_parse(line, i, source) for i, line in enumerate(lines, 1)] if path.suffix != ".txt" else lines
    if not texts:
        raise AnalogError(f"{source} holds no prompts")
    return PromptSet(name_or_path, tuple(texts[:max_prompts]))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnalogError(f"prompt file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None


def _parse(line: str, number: int, source: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AnalogError(f"{source}, line {number}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
        raise AnalogError(f"{source}, line {number}: expected an object with a non-empty \"text\" string")
    return record["text"]
