"""What each metric of the representation suite is: its description, direction, bounds, failure and remedy."""

from pytest_analog.facts import Metric

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
}
