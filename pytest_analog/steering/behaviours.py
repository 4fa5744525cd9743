"""Behaviour sets and their measurement: p(matching answer) from next-token logits, no generation.

A behaviour set is a JSONL file, one two-choice item per line::

    {"prompt": "...\\n(A) ...\\n(B) ...\\nAnswer:", "matching": " A", "other": " B", "split": "train"}

``matching`` is the answer that shows the behaviour, ``other`` the one that
does not; each is appended to the prompt as is, and its first token after the
prompt is the answer token. ``split`` is ``train`` (for extracting vectors) or
``eval`` (held out, for measuring them). Shipped sets: ``fixtures/behaviours``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pytest_analog.errors import AnalogError
from pytest_analog.resources import shipped

_KEYS = ("prompt", "matching", "other", "split")


@dataclass(frozen=True)
class Item:
    prompt: str
    matching: str
    other: str

    @property
    def positive(self) -> str:
        """The prompt answered with the behaviour."""
        return self.prompt + self.matching

    @property
    def negative(self) -> str:
        return self.prompt + self.other


@dataclass(frozen=True)
class Behaviour:
    name: str
    train: tuple[Item, ...]
    eval: tuple[Item, ...]


def shipped_behaviours() -> list[str]:
    """Names of the behaviour sets that ship with the package."""
    folder = shipped("fixtures") / "behaviours"
    return sorted(p.name.removesuffix(".jsonl") for p in folder.glob("*.jsonl"))


def load_behaviour(name_or_path: str) -> Behaviour:
    """Load a shipped behaviour set by name, or a ``.jsonl`` file in the format above.

    Raises:
        AnalogError: unknown name, missing or malformed file, or an empty split.
    """
    path = Path(name_or_path).expanduser()
    if path.suffix != ".jsonl":
        path = shipped("fixtures") / "behaviours" / f"{name_or_path}.jsonl"
        if not path.is_file():
            raise AnalogError(
                f"unknown behaviour set '{name_or_path}'; shipped sets: {', '.join(shipped_behaviours())}, or give a .jsonl path"
            )
    elif not path.is_file():
        raise AnalogError(f"behaviour file {path} does not exist")
    splits: dict[str, list[Item]] = {"train": [], "eval": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            record = _parse(line, number, path)
            splits[record["split"]].append(Item(record["prompt"], record["matching"], record["other"]))
    for split, items in splits.items():
        if not items:
            raise AnalogError(f"behaviour file {path} has no '{split}' items; each set needs both splits")
    return Behaviour(path.stem, tuple(splits["train"]), tuple(splits["eval"]))


def _parse(line: str, number: int, path: Path) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AnalogError(f"behaviour file {path}, line {number}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) and record[k] for k in _KEYS):
        raise AnalogError(f"behaviour file {path}, line {number}: expected non-empty strings {', '.join(_KEYS)}")
    if record["split"] not in ("train", "eval"):
        raise AnalogError(f"behaviour file {path}, line {number}: split must be 'train' or 'eval', got {record['split']!r}")
    if record["matching"] == record["other"]:
        raise AnalogError(f"behaviour file {path}, line {number}: 'matching' and 'other' are the same answer")
    return record


def answer_tokens(tokenizer, item: Item) -> tuple[list[int], int, int]:
    """The prompt's token ids and the first token of each answer after it.

    Raises:
        AnalogError: the answers start with the same token, or appending an
            answer re-tokenizes the prompt (the answer cannot be read from the
            prompt's next-token logits).
    """
    prompt = tokenizer(item.prompt)["input_ids"]
    tokens = []
    for answer in (item.matching, item.other):
        ids = tokenizer(item.prompt + answer)["input_ids"]
        if ids[: len(prompt)] != prompt or len(ids) == len(prompt):
            raise AnalogError(
                f"answer {answer!r} merges with the end of the prompt {item.prompt[-30:]!r} in tokenizer "
                f"{tokenizer.name_or_path}; end prompts so that each answer starts a new token (e.g. 'Answer:' + ' A')"
            )
        tokens.append(ids[len(prompt)])
    if tokens[0] == tokens[1]:
        raise AnalogError(f"answers {item.matching!r} and {item.other!r} start with the same token; they cannot be told apart")
    return prompt, tokens[0], tokens[1]


def matching_probability(logits: torch.Tensor, matching: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """p(matching) / (p(matching) + p(other)) per row, from next-token logits [rows, V]."""
    pair = torch.stack([logits.gather(1, matching[:, None])[:, 0], logits.gather(1, other[:, None])[:, 0]], dim=1)
    return torch.softmax(pair.double(), dim=1)[:, 0]
