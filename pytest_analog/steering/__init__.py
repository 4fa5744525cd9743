"""Steering transfer: do interventions found on the analog work on the teacher?

Extract a steering vector on either model, fit a map from analog to teacher
activations, carry the vector across, add it to the teacher with a context
manager, and measure a behaviour from next-token logits. Layer i is
``hidden_states[i]`` (0: embedding output, i: output of block i-1).

    from pytest_analog.steering import extract, fit_maps, transfer_vector, steer, load_behaviour, dose_response
"""

from pytest_analog.steering.behaviours import (
    Behaviour,
    Item,
    load_behaviour,
    matching_probability,
    shipped_behaviours,
)
from pytest_analog.steering.hooks import steer
from pytest_analog.steering.maps import (
    MAP_KINDS,
    AffineMap,
    AutoencoderMap,
    PairedMoments,
    evaluate,
    fit_autoencoder,
    fit_map,
)
from pytest_analog.steering.transfer import (
    behaviour_probabilities,
    dose_response,
    fit_maps,
    random_direction,
    transfer_criteria,
    transfer_vector,
)
from pytest_analog.steering.vectors import activations, difference_vector, extract

__all__ = [
    "MAP_KINDS",
    "AffineMap",
    "AutoencoderMap",
    "Behaviour",
    "Item",
    "PairedMoments",
    "activations",
    "behaviour_probabilities",
    "difference_vector",
    "dose_response",
    "evaluate",
    "extract",
    "fit_autoencoder",
    "fit_map",
    "fit_maps",
    "load_behaviour",
    "matching_probability",
    "random_direction",
    "shipped_behaviours",
    "steer",
    "transfer_criteria",
    "transfer_vector",
]
