"""What each metric of the embeddings suite is: its description, direction, bounds, failure and remedy."""

from pytest_analog.facts import Metric

METRICS = {
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
}
