"""What each metric of the steering suite is: its description, direction, bounds, failure and remedy."""

import math

from pytest_analog.facts import Metric

METRICS = {
    "transfer_ratio": Metric(
        "transferred effect / native effect on the teacher, at the dose where the native effect is half its maximum",
        "The analog's steering vector, mapped into the teacher, moves the teacher's behaviour by this fraction of "
        "what the teacher's own vector does at the same norm-relative dose. 1 means it transfers fully. Higher is better.",
        "a steering vector found on the analog does not move the teacher as the teacher's own vector does",
        "add hidden-state alignment (analog-distill --align cosine), distil on more tokens, or carry the vector "
        "from another analog layer (steering.analog_layers)",
        direction="min",
    ),
    "transfer_gap": Metric(
        "1 - transfer ratio",
        "The share of the native steering effect lost in transfer; 0 is a full transfer. Lower is better.",
        "much of the native steering effect is lost in transfer",
        "add hidden-state alignment (analog-distill --align cosine), distil on more tokens, or carry the vector "
        "from another analog layer (steering.analog_layers)",
        direction="max",
    ),
    "spearman": Metric(
        "Spearman rho between dose and behaviour for the transferred vector",
        "Rank correlation between the norm-relative dose α of the transferred vector and p(matching answer); "
        "1 means a monotonic dose response. Higher is better.",
        "the transferred vector's dose response is not monotonic: more of it does not consistently mean more behaviour",
        "measure on more held-out items (steering.eval_items) and add hidden-state alignment at the steered layer",
        (-1.0, 1.0),
        direction="min",
    ),
    "random_control": Metric(
        "largest |effect| of an equal-norm random vector / largest |effect| of the native vector",
        "How much a random direction of the same norm moves the behaviour, relative to the native vector. Near 0 "
        "means the effect is specific to the behaviour direction. Lower is better.",
        "a random vector of the same norm moves the behaviour about as much: the measured effect is not specific",
        "use smaller doses (steering.alphas): at large α any direction disrupts the teacher",
        (0.0, math.inf),
        direction="max",
    ),
    "direction_fidelity": Metric(
        "cosine of the analog's steering vector, mapped into the teacher, with the teacher's native vector",
        "The analog's steering vector for the behaviour, carried into the teacher's space by the fitted map, "
        "points this closely along the teacher's own vector (1: the same direction, 0: unrelated). Its chance "
        "level is the same cosine for random analog directions carried through the same map. Needs no teacher "
        "at gate time. Higher is better.",
        "the analog's behaviour direction, carried into the teacher, points elsewhere than the teacher's own",
        "add hidden-state alignment (analog-distill --align cosine), distil on more tokens, or carry the vector "
        "from another analog layer (steering.analog_layers)",
        (-1.0, 1.0),
        direction="min",
        own_chance=True,
    ),
    "map_fvu": Metric(
        "held-out fraction of variance unexplained of the analog -> teacher activation map",
        "Residual variance of the mapped analog activations against the teacher's on held-out prompts, over the "
        "teacher's total variance. 0 is a perfect map. Lower is better.",
        "the analog's activations do not predict the teacher's at this layer pair",
        "fit the map on more prompts (steering.map_prompts), add hidden-state alignment, or pair another analog layer",
        (0.0, math.inf),
        direction="max",
    ),
    "map_cosine": Metric(
        "held-out mean cosine between mapped analog activations and teacher activations",
        "Mean cosine similarity between mapped analog activations and the teacher's, per token on held-out "
        "prompts. Higher is better.",
        "mapped analog activations point elsewhere than the teacher's",
        "fit the map on more prompts (steering.map_prompts), add hidden-state alignment, or pair another analog layer",
        (-1.0, 1.0),
        direction="min",
    ),
}
