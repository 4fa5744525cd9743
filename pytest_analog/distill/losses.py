"""Distillation losses over the teacher's next-token distributions and hidden states.

The teacher's distribution at temperature T is held as its top-k log-probs plus
the log of the remaining mass (`data.TeacherTargets` caches exactly that); the
student's is gathered into the same k + 1 buckets, so each divergence is exact
over those buckets and equals the full-vocabulary one when k covers the
vocabulary. Every divergence is a mean over token positions, in nats, scaled by
T² (Hinton et al. 2015) so gradients keep their size across temperatures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def teacher_buckets(logp: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """[n, k+1] teacher log-probs: the top-k entries, then the log of the remaining mass."""
    return torch.cat([logp.float(), rest.float()[:, None]], dim=-1)


def student_buckets(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """[n, k+1] student log-probs at ``temperature`` over the teacher's top-k ids and the rest.

    One fused log-softmax, as in cross-entropy; the rest is 1 − Σ top-k, floored
    at 1e-30 where float32 rounding leaves nothing (its weight is then below 1e-6).
    """
    z = logits.float() if temperature == 1 else logits.float() / temperature
    top = torch.log_softmax(z, dim=-1).gather(-1, ids.long())
    if ids.shape[-1] >= logits.shape[-1]:  # every token is in the top-k: no rest
        rest = torch.full_like(top[:, :1], float("-inf"))
    else:
        rest = torch.log((1 - top.exp().sum(-1, keepdim=True)).clamp_min(1e-30))
    return torch.cat([top, rest], dim=-1)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(p ‖ q) from log-probs; a zero-probability entry of p adds nothing."""
    terms = torch.where(torch.isneginf(log_p), 0.0, log_p.exp() * (log_p - log_q))
    return terms.sum(-1).mean()


def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(teacher ‖ student): mass-covering (Hinton et al. 2015)."""
    return temperature**2 * kl(log_p, log_q)


def reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(student ‖ teacher): mode-seeking (MiniLLM, GKD)."""
    return temperature**2 * kl(log_q, log_p)


def generalized_jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """T² · [β KL(p ‖ m) + (1−β) KL(q ‖ m)], m = β p + (1−β) q (TRL's GKD).

    As in TRL, β = 0 and β = 1 are forward and reverse KL (the mixture form
    vanishes at both ends); β = 0.5 is the Jensen-Shannon divergence.
    """
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0:
        return forward_kl(log_p, log_q, temperature)
    if beta == 1:
        return reverse_kl(log_p, log_q, temperature)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
    return temperature**2 * (beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m))


def divergence(name: str, log_p, log_q, *, temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """The divergence named by the config: ``forward_kl``, ``reverse_kl`` or ``jsd``."""
    if name == "forward_kl":
        return forward_kl(log_p, log_q, temperature)
    if name == "reverse_kl":
        return reverse_kl(log_p, log_q, temperature)
    if name == "jsd":
        return generalized_jsd(log_p, log_q, beta, temperature)
    raise ValueError(f"loss must be forward_kl, reverse_kl or jsd, got {name!r}")


def alignment(student_h: torch.Tensor, teacher_h: torch.Tensor, kind: str) -> torch.Tensor:
    """Hidden-state alignment of projected student states [n, d_t] to the teacher's [n, d_t].

    ``mse`` is divided by the teacher's mean square, so it reads as a fraction
    of the teacher's energy and no layer dominates by scale; ``cosine`` is the
    mean of 1 − cos per token.
    """
    student_h, teacher_h = student_h.float(), teacher_h.float()
    if kind == "mse":
        return F.mse_loss(student_h, teacher_h) / teacher_h.pow(2).mean().clamp_min(1e-12)
    if kind == "cosine":
        return (1 - F.cosine_similarity(student_h, teacher_h, dim=-1)).mean()
    raise ValueError(f"align must be none, mse or cosine, got {kind!r}")
