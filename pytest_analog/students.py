"""Students built from a teacher without training: reference points for the gate.

- `layer_pruned_copy`: the teacher with only some blocks kept (DistilBERT-style
  initialisation), the stand-in analog of the built-in demo pair;
- `random_copy`: the teacher's architecture with fresh random weights, the
  level an unrelated model of the same shape scores.
"""

from __future__ import annotations

import copy


def layer_pruned_copy(model, keep: list[int]):
    """A deep copy of a decoder model that keeps only the blocks in ``keep`` (in order).

    Layer indices are renumbered so the KV cache of the copy is consistent.
    """
    blocks = _blocks(model)
    if not keep or any(not 0 <= i < len(blocks) for i in keep):
        raise ValueError(f"keep must list block indices in 0..{len(blocks) - 1}, got {keep}")
    pruned = copy.deepcopy(model)
    kept = [_blocks(pruned)[i] for i in keep]
    _set_blocks(pruned, kept)
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = pruned.config.get_text_config()
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    return pruned


def random_copy(model, seed: int = 0):
    """A model of the same architecture and config with freshly initialised weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(model.config)
    return fresh.to(dtype=next(model.parameters()).dtype).eval()


def _blocks(model):
    base = getattr(model, model.base_model_prefix)
    for name in ("layers", "h", "blocks"):
        if hasattr(base, name):
            return getattr(base, name)
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")


def _set_blocks(model, blocks) -> None:
    import torch

    base = getattr(model, model.base_model_prefix)
    name = next(n for n in ("layers", "h", "blocks") if hasattr(base, n))
    setattr(base, name, torch.nn.ModuleList(blocks))
