"""Settings of the steering suite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Steering:
    behaviours: list[str]
    teacher_layers: Literal["auto"] | list[int]
    analog_layers: Literal["best_match", "proportional"] | dict[int, int]
    position: int
    method: Literal["mean", "pca"]
    alphas: list[float]
    from_position: int
    map: Literal["ridge", "procrustes", "autoencoder"]
    ridge: float
    autoencoder_steps: int
    map_prompts: int
    max_length: int
    train_items: int
    eval_items: int
    batch_size: int
    seed: int
    min_native_effect: float
    random_directions: int  # random analog directions whose mapped cosine is direction fidelity's chance level
    random_vectors: int  # random steering vectors run on the teacher: the transfer ratio's chance level


# Value checks beyond the type (see `config`): dotted key -> (test, what is expected).
CHECKS = {
    "steering.behaviours": (lambda v: 1 <= len(v) <= 100, "a list of 1 to 100 behaviour names or .jsonl paths"),
    "steering.alphas": (lambda v: len(v) <= 100 and any(a > 0 for a in v), "a list of at most 100 numbers with at least one > 0"),
    "steering.from_position": (lambda v: 0 <= v <= 32_768, "an integer from 0 to 32,768"),
    "steering.ridge": (lambda v: v > 0, "a number > 0"),
    "steering.autoencoder_steps": (lambda v: 1 <= v <= 1_000_000, "an integer from 1 to 1,000,000"),
    "steering.map_prompts": (lambda v: 5 <= v <= 100_000, "an integer from 5 to 100,000 (every fifth prompt is held out)"),
    "steering.max_length": (lambda v: 2 <= v <= 32_768, "an integer from 2 to 32,768"),
    "steering.train_items": (lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
    "steering.eval_items": (lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
    "steering.batch_size": (lambda v: 1 <= v <= 4_096, "an integer from 1 to 4,096"),
    "steering.seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    "steering.min_native_effect": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "steering.random_directions": (lambda v: 2 <= v <= 100_000, "an integer from 2 to 100,000"),
    "steering.random_vectors": (lambda v: 1 <= v <= 1_000, "an integer from 1 to 1,000"),
}
