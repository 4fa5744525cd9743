"""Direction fidelity: does the analog's steering vector, mapped into the teacher, point where the teacher's does?

The transfer ratio needs the teacher to run the transferred vector; the direction
needs only the teacher's native vector, so it is measured against a teacher
reference too. Its value is cos(mapped analog vector, native vector). Its chance
level is the same cosine, by magnitude (a direction's sign is arbitrary), for
random analog directions of the analog vector's norm carried through the same
map: a map squeezes every input toward the few directions it fits best, so a
random direction can come out well aligned with the native one, and only the
part above that counts. Intervals resample the contrastive pairs (both vectors
together) and, for the chance level, the random draws.
"""

from __future__ import annotations

import numpy as np
import torch

from pytest_analog.criterion import chance_corrected
from pytest_analog.metrics import centre, percentile_interval, resample_counts
from pytest_analog.steering.vectors import difference_vector


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of each row of ``a`` [.., d] with ``b`` [d]."""
    return torch.nn.functional.cosine_similarity(a, b.expand_as(a), dim=-1)


def mapped_random_directions(mapping, negative: torch.Tensor, norm: float, draws: int, seed: int) -> torch.Tensor:
    """[draws, d_t]: equal-norm random analog directions carried through ``mapping`` as the analog vector is:
    the mean over the pairs' negatives of mapping(negative + direction) - mapping(negative)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(draws, negative.shape[1], generator=generator, dtype=torch.float64)
    directions *= norm / directions.norm(dim=1, keepdim=True)
    shifted = (negative.double()[None] + directions[:, None]).reshape(-1, negative.shape[1])
    moved = torch.as_tensor(mapping(shifted)).double().reshape(draws, len(negative), -1)
    return (moved - torch.as_tensor(mapping(negative.double())).double()[None]).mean(1)


def direction_fidelity(mapping, positive, negative, differences, native, *, method: str, draws: int, seed: int,
                       resamples: int = 200, confidence: float = 0.95) -> dict:
    """cos(mapped analog vector, native teacher vector) with its chance level, as `criterion.Measured` fields.

    Args:
        mapping: the analog -> teacher map (`maps`).
        positive, negative: the analog's activations of the contrastive pairs [pairs, d_s].
        differences: the teacher's positive - negative activations of the same pairs [pairs, d_t].
        native: the teacher's vector (`difference_vector` of those pairs).
        method: "mean" or "pca", as the vectors were extracted.
        draws: random analog directions for the chance level; seeded by ``seed``.
        resamples: bootstrap draws over pairs (0: no intervals).
    """
    mapped_pos, mapped_neg = torch.as_tensor(mapping(positive)).double(), torch.as_tensor(mapping(negative)).double()
    value = float(_cosine(difference_vector(mapped_pos, mapped_neg, method), native.double()))
    norm = float(difference_vector(positive.double(), negative.double(), "mean").norm())
    random = _cosine(mapped_random_directions(mapping, negative, norm, draws, seed), native.double()).abs().numpy()
    chance = float(random.mean())
    out = {"value": value, "chance": chance, "interval": None, "chance_interval": None, "corrected_interval": None}
    if not resamples:
        return out
    replicates = []
    zeros = torch.zeros_like(differences)
    for counts in resample_counts(len(differences), resamples, seed):
        rows = torch.from_numpy(np.repeat(np.arange(len(differences)), counts))
        teacher = difference_vector(differences[rows], zeros[rows], method)
        replicates.append(float(_cosine(difference_vector(mapped_pos[rows], mapped_neg[rows], method), teacher)))
    replicates = centre(replicates, value)
    chances = resample_counts(draws, resamples, seed + 1) @ random / draws
    return {
        **out,
        "interval": percentile_interval(replicates, confidence),
        "chance_interval": percentile_interval(centre(chances, chance), confidence),
        "corrected_interval": percentile_interval(centre(chance_corrected(replicates, chance), chance_corrected(value, chance)), confidence),
    }
