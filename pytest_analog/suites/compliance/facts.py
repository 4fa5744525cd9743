"""What each metric of the compliance suite is: its description, direction, bounds, failure and remedy."""

import math

from pytest_analog.facts import Metric

METRICS = {
    "parameter_fraction": Metric(
        "analog parameters / teacher parameters",
        "The analog's parameter count as a fraction of the teacher's; the policy proposal "
        "(arXiv 2510.14053) releases analogs at 0.5-5 % of the teacher.",
        "the analog's size is outside the range the release policy allows",
        "distil at a --fraction inside the configured bounds",
        (0.0, math.inf),
        direction=None,
    ),
    "same_family": Metric(
        "same architecture family as the teacher (config model_type)",
        "1 when the analog's config names the teacher's model_type, 0 otherwise.",
        "the analog is not of the teacher's architecture family",
        "distil from the teacher's own architecture (analog-distill keeps it)",
        (0.0, 1.0),
        direction="min",
    ),
    "safetensors": Metric(
        "every weight file is safetensors",
        "1 when all the analog's weight files are .safetensors, 0 otherwise.",
        "the analog's weights are not all in safetensors",
        "save the weights as safetensors (save_pretrained(..., safe_serialization=True))",
        (0.0, 1.0),
        direction="min",
    ),
    "model_card": Metric(
        "model card with architecture, training setup, training data and intended use",
        "1 when the analog's model card has a section on each required topic, 0 otherwise.",
        "the analog's model card lacks a required section",
        "add the missing sections to the card (analog-distill writes a card with all four)",
        (0.0, 1.0),
        direction="min",
    ),
    "license": Metric(
        "permissive licence (model card metadata or LICENSE file)",
        "1 when the analog's licence is one of the allowed permissive licences, 0 otherwise.",
        "the analog's licence is missing or not permissive",
        "put license: in the card's front matter, or add a LICENSE file",
        (0.0, 1.0),
        direction="min",
    ),
    "training_code": Metric(
        "distillation or training scripts, or their documentation, in the release",
        "1 when the release holds training code or a config, or its model card documents it, 0 otherwise.",
        "the release does not show how the analog was trained",
        "add the distillation script or config to the release (analog-distill writes distill_config.json)",
        (0.0, 1.0),
        direction="min",
    ),
    "release_lag": Metric(
        "months from the teacher's release to the analog's",
        "Months between the two release dates given in the config (a month is 365.25/12 days).",
        "the analog's release date is outside the lag the release policy allows",
        "release the analog inside the configured window after the teacher",
        direction=None,
    ),
}
