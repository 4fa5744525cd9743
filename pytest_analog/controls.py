"""Models built from another without training: the chance controls and reference points of the gate.

- `layer_pruned_copy`: the teacher with only some blocks kept (DistilBERT-style
  initialisation), the stand-in analog of the built-in demo pair;
- `random_copy`: the teacher's architecture with fresh random weights, the
  level an unrelated model of the same shape scores;
- `permuted_copy`: the same weights shuffled within each tensor (same weight
  statistics, no learned structure);
- `control_model`: one of the last two built from the analog, the chance
  baseline of the representation criteria; `control_models`: one per seed,
  whose spread is the chance level's own variation.
"""

from __future__ import annotations

import copy

from pytest_analog.models import LoadedModel, decoder_blocks, replace_decoder_blocks


def layer_pruned_copy(model, keep: list[int]):
    """A deep copy of a decoder model that keeps only the blocks in ``keep`` (in order).

    Layer indices are renumbered so the KV cache of the copy is consistent.
    """
    blocks = decoder_blocks(model)
    if not keep or any(not 0 <= i < len(blocks) for i in keep):
        raise ValueError(f"keep must list block indices in 0..{len(blocks) - 1}, got {keep}")
    pruned = copy.deepcopy(model)
    kept = [decoder_blocks(pruned)[i] for i in keep]
    replace_decoder_blocks(pruned, kept)
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


def permuted_copy(model, seed: int = 0):
    """A deep copy whose every weight tensor has its entries randomly permuted (seeded)."""
    import torch

    permuted = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in permuted.parameters():  # tied weights appear once: they stay tied
            flat = param.detach().reshape(-1)
            order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
            param.copy_(flat[order].reshape(param.shape))
    return permuted.eval()


CONTROLS = {"random": random_copy, "permuted": permuted_copy}


def control_model(analog, kind: str, seed: int):
    """The chance control for ``analog`` (a `LoadedModel`): same architecture and tokenizer, no learned structure."""
    model = CONTROLS[kind](analog.model, seed=seed).to(analog.input_device)
    info = {
        "kind": kind,
        "seed": seed,
        "of": analog.info.get("id"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_layers": analog.num_layers,
    }
    return LoadedModel(model, analog.tokenizer, info, analog.source)


def control_models(analog, kind: str, seed: int, seeds: int) -> list:
    """``seeds`` chance controls for ``analog``, seeded ``seed``, ``seed + 1``, ...: the first is the one whose
    replicates give the chance level's interval over prompts, the others add the seed-to-seed spread."""
    return [control_model(analog, kind, seed + s) for s in range(seeds)]
