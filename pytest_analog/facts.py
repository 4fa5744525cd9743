"""What each built-in metric is: its description, its direction, what a failure means and what helps.

One `Metric` per metric name, read by the criteria (`criterion`), the config's threshold
checks, the reports and the leaderboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_ANY = (-math.inf, math.inf)


@dataclass(frozen=True)
class Metric:
    """What the report says about a built-in metric, and the values it can take."""

    description: str  # what is measured, one line (the criterion's "description")
    explanation: str  # for a reader of the report: scale and direction
    failure: str  # what a failing value means for the analog
    remedy: str  # what usually helps when it fails
    # The raw values the metric can take. A threshold outside them can never pass, or never fail,
    # so the config refuses it; a corrected score (value - chance) / (1 - chance) is at most 1.
    bounds: tuple[float, float] = _ANY
    # "min": higher is better (a threshold is a minimum); "max": lower is better; None: set per
    # criterion (a size or date range is gated on both sides; a benchmark delta follows its task's metric).
    direction: str | None = "min"  # every entry below names it


METRICS = {
    "cka": Metric(
        "debiased linear CKA over aligned tokens (Kornblith et al. 2019)",
        "Debiased linear CKA between teacher and analog hidden states at the same token positions. "
        "1 means the two representations agree up to rotation and uniform scaling; about 0 means "
        "unrelated. Higher is better.",
        "the analog's layer shares little linear structure with the teacher's (0 = unrelated, 1 = identical up to rotation and scale)",
        "distil on more tokens (a larger --corpus), add hidden-state alignment (analog-distill --align cosine), or map this "
        "teacher layer to a better-matching analog layer (layers.map; the heatmap rings the best match)",
        (-1.0, 1.0),
        direction="min",
    ),
    "rbf_cka": Metric(
        "RBF-kernel CKA over mean-pooled prompts",
        "CKA with a Gaussian (RBF) kernel over one mean-pooled vector per prompt: like linear CKA but "
        "sensitive to local, non-linear neighbourhood structure. Higher is better.",
        "the two layers arrange whole prompts differently",
        "distil on more tokens and add hidden-state alignment (analog-distill --align cosine)",
        (-1.0, 1.0),
        direction="min",
    ),
    "mutual_knn": Metric(
        "mutual k-nearest-neighbour overlap over mean-pooled prompts (Huh et al. 2024)",
        "Mutual k-nearest neighbours over one mean-pooled vector per prompt: for each prompt, the "
        "fraction of its k nearest prompts (cosine) in the teacher that are also among its k nearest "
        "in the analog. Unrelated representations score about k/(n-1). Higher is better.",
        "prompts that are neighbours in the teacher are not neighbours in the analog",
        "distil on more tokens and add hidden-state alignment (analog-distill --align cosine)",
        (0.0, 1.0),
        direction="min",
    ),
    "embedding_geometry": Metric(
        "Pearson r of the pairwise cosine similarities of shared token rows of the input embeddings (Lee et al. 2025)",
        "Pearson correlation between the pairwise cosine similarities of the teacher's and the analog's "
        "input embedding rows, over a sample of token ids both vocabularies hold. Higher is better.",
        "the analog's token embeddings are not arranged like the teacher's, so directions found in one need not carry over",
        "initialise the analog from the teacher (analog-distill --init pruned copies the embedding rows) or give it a larger --fraction",
        (-1.0, 1.0),
        direction="min",
    ),
    "unembedding_geometry": Metric(
        "Pearson r of the pairwise cosine similarities of shared token rows of the unembeddings (Lee et al. 2025)",
        "The same for the output (unembedding, lm_head) rows. Higher is better.",
        "the analog reads tokens out of its residual stream along directions unlike the teacher's",
        "initialise the analog from the teacher (analog-distill --init pruned copies the output head) or give it a larger --fraction",
        (-1.0, 1.0),
        direction="min",
    ),
    "kl": Metric(
        "mean KL(teacher || analog) per token over the teacher's top-k tokens and the rest as one bucket, nats",
        "Mean KL(teacher || analog) between next-token distributions at the compared positions, in "
        "nats, over the teacher's top logits.top_k (64) tokens with the remaining mass as one bucket: "
        "what a teacher reference keeps. It is a lower bound of the exact KL (equal at top_k = vocabulary "
        "size); on SmolLM2-135M-Instruct against the demo analog it was 0.41 nats (8.7 %) below "
        "(4.28 vs 4.69). 0 means identical predictions. Lower is better.",
        "the analog's next-token distributions are far from the teacher's",
        "distil longer on more tokens (--max-steps, a larger --corpus) or give the analog a larger --fraction",
        (0.0, math.inf),
        direction="max",
    ),
    "top1_agreement": Metric(
        "fraction of positions where both models predict the same next token",
        "Fraction of compared positions where the teacher's and the analog's most likely next token "
        "are the same. Higher is better.",
        "the analog often predicts a different next token than the teacher",
        "distil longer on more tokens (--max-steps, a larger --corpus) or give the analog a larger --fraction",
        (0.0, 1.0),
        direction="min",
    ),
    "perplexity_ratio": Metric(
        "analog perplexity / teacher perplexity on the prompts' own next tokens",
        "Analog perplexity divided by teacher perplexity on the prompt set. 1 means equally good; "
        "above 1 means the analog predicts the text worse.",
        "the analog models the text much worse than the teacher",
        "distil on more tokens, add cross-entropy on the corpus (--ce-weight) or give the analog a larger --fraction",
        (0.0, math.inf),
        direction="max",
    ),
    # The compliance suite (pytest_analog/compliance.py): yes/no checks score 1 (met) or 0 (not met).
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
    "benchmark_retained": Metric(
        "fraction of the teacher's lm-eval score the analog keeps, chance-corrected for multiple choice",
        "On an lm-evaluation-harness task, (analog - chance) / (teacher - chance) for multiple choice, "
        "analog / teacher for other higher-is-better scores, teacher / analog for perplexity and bits per "
        "byte. 1 means the analog keeps all of the teacher's skill, 0 that it guesses. Higher is better.",
        "the analog keeps too little of the teacher's skill on this task",
        "distil on more tokens of text like the task's, or give the analog a larger --fraction",
        direction="min",
    ),
    "benchmark_delta": Metric(
        "analog - teacher lm-eval score, paired over the task's items",
        "The analog's lm-evaluation-harness score minus the teacher's on the same items, with a paired "
        "standard error. 0 means equally good; the sign follows the task's metric.",
        "the analog scores too far below the teacher on this task",
        "distil on more tokens of text like the task's, or give the analog a larger --fraction",
        direction=None,
    ),
}
