"""Checkpoints of a distillation run, in safetensors and JSON only (no pickle).

Each checkpoint is a folder ``step-N`` holding the student with its alignment
projections, the optimizer state, the RNG state and the best weights so far; ``latest`` names the newest
complete one and is replaced atomically after the folder is written, so an
interruption at any moment leaves a checkpoint that loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from pytest_analog.atomic import write_atomic


def save(directory: Path, step: int, module, optimizer, meta: dict, *, best: dict[str, torch.Tensor]) -> Path:
    """Write checkpoint ``step`` with the ``best`` weights so far and point ``latest`` at it; older ones are removed."""
    folder = directory / f"step-{step}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_model(module, str(folder / "model.safetensors"))
    state = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in state["state"].items() for k, v in s.items()}
    tensors["rng"] = torch.get_rng_state()
    save_file(tensors, str(folder / "optimizer.safetensors"))
    save_file(best, str(folder / "best.safetensors"))
    write_atomic(folder / "state.json", json.dumps({**meta, "step": step, "param_groups": state["param_groups"]}))
    write_atomic(directory / "latest", folder.name)
    for old in directory.glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load(directory: Path, module, optimizer) -> dict | None:
    """Restore the newest checkpoint into the given objects; its metadata with the best weights under
    ``"best"``, or None when there is none."""
    try:
        folder = directory / (directory / "latest").read_text().strip()
        meta = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    load_model(module, str(folder / "model.safetensors"))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return {**meta, "best": load_file(str(folder / "best.safetensors"))}


def peek(directory: Path) -> dict | None:
    """The metadata of the newest checkpoint without loading it."""
    try:
        folder = directory / (directory / "latest").read_text().strip()
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
