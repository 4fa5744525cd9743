"""Similarity and fidelity metrics between a teacher and its analog.

Every metric accepts numpy arrays or torch tensors, computes in float64 (the
logit softmax in float32 or better) and returns Python floats or numpy arrays.
"""

from pytest_analog.metrics.bootstrap import (
    Interval,
    bias_corrected_interval,
    centre,
    cka_interval,
    corrected_interval,
    gram_cka_replicates,
    gram_cka_replicates_pairs,
    interval_counts,
    linear_cka_replicates,
    mutual_knn_replicates,
    mutual_knn_replicates_pairs,
    percentile_interval,
    rbf_cka_replicates,
    rbf_cka_replicates_pairs,
    resample_counts,
    same_group_share,
)
from pytest_analog.metrics.cka import StreamingLinearCKA, linear_cka, linear_gram, rbf_cka
from pytest_analog.metrics.geometry import embedding_geometry_pearson
from pytest_analog.metrics.knn import mutual_knn, mutual_knn_overlaps
from pytest_analog.metrics.logits import (
    LogitFidelityResult,
    StreamingLogitFidelity,
    StreamingTopKLogitFidelity,
    logit_fidelity,
    teacher_top_k,
    top_k_logit_fidelity,
)
from pytest_analog.metrics.matrix import best_match, cka_matrix
from pytest_analog.metrics.moments import PairedMoments

__all__ = [
    "Interval",
    "LogitFidelityResult",
    "PairedMoments",
    "StreamingLinearCKA",
    "StreamingLogitFidelity",
    "StreamingTopKLogitFidelity",
    "best_match",
    "bias_corrected_interval",
    "centre",
    "cka_interval",
    "cka_matrix",
    "corrected_interval",
    "embedding_geometry_pearson",
    "gram_cka_replicates",
    "gram_cka_replicates_pairs",
    "interval_counts",
    "linear_cka",
    "linear_cka_replicates",
    "linear_gram",
    "logit_fidelity",
    "mutual_knn",
    "mutual_knn_overlaps",
    "mutual_knn_replicates",
    "mutual_knn_replicates_pairs",
    "percentile_interval",
    "rbf_cka",
    "rbf_cka_replicates",
    "rbf_cka_replicates_pairs",
    "resample_counts",
    "same_group_share",
    "teacher_top_k",
    "top_k_logit_fidelity",
]
