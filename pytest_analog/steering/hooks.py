"""Adding a steering vector to the residual stream through forward hooks.

Layer i is ``hidden_states[i]`` (see `pytest_analog.layers.LAYER_CONVENTION`):
steering layer i >= 1 adds to the output of block i-1, layer 0 to the input of
block 0 (the embedding output). The addition happens where the model's own
``hidden_states`` are recorded, so ``hidden_states[i]`` of a steered forward
pass shows it. The last layer (after the final norm) is not steerable.

Positions are chosen by the position ids the model passes to its blocks, not
by index within one forward call: with a KV cache each decoding step sees one
token, and with left padding a sequence's first token is not at index 0.
"""

from __future__ import annotations

import contextlib

import torch

from pytest_analog.errors import AnalogError
from pytest_analog.models import decoder_blocks


def _module(model) -> torch.nn.Module:
    """The transformers model of a `LoadedModel`, or the model itself."""
    return model if isinstance(model, torch.nn.Module) else model.model


@contextlib.contextmanager
def steer(model, layer: int, vector, alpha: float = 1.0, *, from_position: int = 1):
    """Add ``alpha * vector`` to layer ``layer`` at every position whose position id is >= ``from_position``.

    The default leaves position 0, the attention sink, untouched. The vector is
    cast to the activation's dtype and device inside the hook; the hook is
    removed on exit, also when the body raises.

    Args:
        model: a transformers causal LM (or a `LoadedModel`).
        layer: 0 .. num_layers - 1 (layer i = hidden_states[i]).
        vector: [d] tensor or array.
        alpha: multiplier (a plain number; `transfer.dose_response` steers in norm-relative units).
        from_position: first position id steered.

    Raises:
        AnalogError: the layer is out of range or the vector has the wrong width.
    """
    blocks = decoder_blocks(model)
    if not 0 <= layer < len(blocks):
        raise AnalogError(
            f"steering layer {layer} is out of range: layers 0..{len(blocks) - 1} are steerable "
            f"(layer i = hidden_states[i]; the last, after the final norm, is not)"
        )
    delta = torch.as_tensor(vector).detach().flatten() * float(alpha)
    width = _module(model).config.get_text_config().hidden_size
    if delta.numel() != width:
        raise AnalogError(f"steering vector has {delta.numel()} entries, but the model's hidden size is {width}")

    def add(hidden, kwargs):
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = kwargs.get("cache_position")
        if positions is None:
            raise AnalogError(f"{type(blocks[0]).__name__} receives no position_ids; steering needs them to choose positions")
        mask = (positions.reshape(-1, hidden.shape[1]) >= from_position).to(hidden.device)  # [1 or batch, tokens]
        return hidden + mask[..., None].to(hidden.dtype) * delta.to(device=hidden.device, dtype=hidden.dtype)

    def after_block(module, args, kwargs, output):
        if isinstance(output, tuple):
            return (add(output[0], kwargs), *output[1:])
        return add(output, kwargs)

    def before_block(module, args, kwargs):
        if args:
            return (add(args[0], kwargs), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": add(kwargs["hidden_states"], kwargs)}

    if layer == 0:
        handle = blocks[0].register_forward_pre_hook(before_block, with_kwargs=True, prepend=True)
    else:  # prepend: runs before the hook that records hidden_states, so the record shows the addition
        handle = blocks[layer - 1].register_forward_hook(after_block, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()
