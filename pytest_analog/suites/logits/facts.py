"""What each metric of the logits suite is: its description, direction, bounds, failure and remedy."""

import math

from pytest_analog.facts import Metric

METRICS = {
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
}
