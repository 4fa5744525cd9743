"""Steering vectors: mean difference (CAA) or first principal component of positive − negative activations."""

from __future__ import annotations

import torch

from pytest_analog.capture import forward
from pytest_analog.errors import AnalogError


def activations(model, texts, layers, *, position: int = -1, batch_size: int = 16) -> dict[int, torch.Tensor]:
    """Hidden states at ``layers`` and one token ``position`` of each text, float64 [texts, d] per layer.

    ``position`` indexes each text's own tokens (-1: its last token), whatever the padding.
    ``model`` is a `LoadedModel` (``.model``, ``.tokenizer``).
    """
    tokenizer = model.tokenizer
    out = {layer: [] for layer in layers}
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer(t)["input_ids"] for t in texts[start : start + batch_size]]
        where = []
        for seq in ids:
            p = position if position >= 0 else len(seq) + position
            if not 0 <= p < len(seq):
                raise AnalogError(f"token position {position} is outside a text of {len(seq)} tokens")
            where.append(p)
        with torch.inference_mode():
            hidden = forward(model, ids, with_logits=False).hidden_states
        rows = torch.arange(len(ids))
        for layer in layers:
            if not 0 <= layer < len(hidden):
                raise AnalogError(f"layer {layer} is out of range: the model has layers 0..{len(hidden) - 1}")
            out[layer].append(hidden[layer][rows, torch.tensor(where)].double().cpu())
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def token_states(model, sequences: list[list[int]], layers, *, batch_size: int = 16) -> dict[int, torch.Tensor]:
    """Hidden states at every token of each id list, concatenated in order: [sum of lengths, d] per layer.

    Batches hold sequences of similar length (less padding); ``model`` is a `LoadedModel`.
    """
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))
    rows: dict[int, list] = {layer: [None] * len(sequences) for layer in layers}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        with torch.inference_mode():
            hidden = forward(model, [sequences[k] for k in chunk], with_logits=False).hidden_states
        for layer in layers:
            for b, k in enumerate(chunk):  # right padded: a sequence's tokens come first
                rows[layer][k] = hidden[layer][b, : len(sequences[k])].cpu()
    return {layer: torch.cat(parts) for layer, parts in rows.items()}


def difference_vector(positive: torch.Tensor, negative: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """The steering vector of paired activations [pairs, d]: mean of differences, or their first principal component.

    The principal component's sign is fixed so that positives project higher, and
    it is scaled to the mean projection of the differences, so both methods
    return vectors of comparable norm.
    """
    if positive.shape != negative.shape or positive.ndim != 2:
        raise AnalogError(f"positive and negative activations must be paired [pairs, d], got {tuple(positive.shape)} and {tuple(negative.shape)}")
    diffs = (positive - negative).double()
    if method == "mean":
        return diffs.mean(0)
    if method == "pca":
        centred = diffs - diffs.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        projection = (diffs @ direction).mean()
        return direction * projection  # negative projection flips the sign: positives project higher
    raise AnalogError(f"steering vector method must be 'mean' or 'pca', got {method!r}")


def extract(model, positives, negatives, layer: int, *, position: int = -1, method: str = "mean", batch_size: int = 16) -> torch.Tensor:
    """The steering vector of ``model`` at ``layer`` (= ``hidden_states[layer]``) from paired texts.

    Args:
        model: a `LoadedModel`.
        positives, negatives: texts showing and not showing the behaviour, pair by pair.
        layer: the layer (0 = embedding output, i = output of block i-1).
        position: token position within each text (-1: the last token).
        method: "mean" (mean of differences, CAA) or "pca" (first principal component of differences).

    Returns:
        float64 [d].
    """
    if len(positives) != len(negatives) or not positives:
        raise AnalogError(f"need the same positive number of positive and negative texts, got {len(positives)} and {len(negatives)}")
    acts = activations(model, list(positives) + list(negatives), [layer], position=position, batch_size=batch_size)[layer]
    return difference_vector(acts[: len(positives)], acts[len(positives) :], method)
