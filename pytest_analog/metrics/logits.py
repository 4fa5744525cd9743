"""Output fidelity of an analog that shares its teacher's tokenizer.

Compares next-token distributions position by position: forward KL(teacher ‖
analog), top-1 agreement and, given the actual next tokens, each model's
perplexity. `StreamingLogitFidelity` reads both models' full logits;
`StreamingTopKLogitFidelity` reads the teacher's top k tokens and the rest as
one bucket (`teacher_top_k`), what a teacher reference stores.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch

from pytest_analog.metrics._utils import nan_with_warning

# logit entries processed at once, so that float32 temporaries stay ~16 MB each
_CHUNK_ELEMENTS = 1 << 22


class LogitFidelityResult(TypedDict):
    """Result of `StreamingLogitFidelity.compute` and `logit_fidelity`."""

    kl: float  # mean per-token KL(teacher ‖ analog), nats
    top1_agreement: float  # fraction of tokens where both argmaxes agree
    perplexity_teacher: float  # exp(mean teacher NLL of the targets); NaN without targets
    perplexity_analog: float  # exp(mean analog NLL of the targets); NaN without targets
    perplexity_ratio: float  # perplexity_analog / perplexity_teacher
    n_tokens: int  # token positions compared


def _as_logits(z, name: str) -> torch.Tensor:
    """Logits as a [n, V] tensor in float32 (float64 kept); NaN and +inf rejected, −inf allowed."""
    z = torch.as_tensor(z).detach()
    if z.ndim != 2:
        raise ValueError(f"{name} must have shape [n, V], got {tuple(z.shape)}")
    z = z.to(torch.float64 if z.dtype == torch.float64 else torch.float32)
    # one pass: a row sum is NaN or +inf exactly when the row holds NaN or +inf (−inf alone gives −inf)
    row_sums = z.sum(-1)
    if bool(torch.isnan(row_sums).any() or torch.isposinf(row_sums).any()):
        raise ValueError(f"{name} contains NaN or +inf")
    return z


def _logit_fidelity_update(t: torch.Tensor, s: torch.Tensor, targets: torch.Tensor | None):
    """Sums for one chunk: (Σ KL, #top-1 agreements, Σ teacher NLL, Σ analog NLL) as floats."""
    log_t, log_s = torch.log_softmax(t, dim=-1), torch.log_softmax(s, dim=-1)
    p_t = log_t.exp()
    # where p_t = 0 (e.g. a −inf logit) the term is 0, not 0·(−inf) = NaN
    terms = torch.where(p_t > 0, p_t * (log_t - log_s), 0.0)
    kl = terms.sum(-1, dtype=torch.float64).clamp_(min=0)  # rounding can leave −1e-9 for p ≈ q
    agree = int((t.argmax(-1) == s.argmax(-1)).sum())
    if targets is None:
        return float(kl.sum()), agree, 0.0, 0.0
    index = targets[:, None]
    nll_t = -log_t.gather(1, index).sum(dtype=torch.float64)
    nll_s = -log_s.gather(1, index).sum(dtype=torch.float64)
    return float(kl.sum()), agree, float(nll_t), float(nll_s)


class StreamingLogitFidelity:
    """KL(teacher ‖ analog), top-1 agreement and perplexities, accumulated over batches.

    log_softmax runs in float32 (float64 inputs stay float64) on chunks of
    rows; sums are float64. Memory is O(chunk·V), independent of the number
    of tokens; `merge` is exact because the state is plain sums.

    Example:
        >>> import torch
        >>> logits = torch.randn(5, 11)
        >>> m = StreamingLogitFidelity()
        >>> m.update(logits, logits, targets=torch.arange(5))
        >>> r = m.compute()
        >>> r["kl"], r["top1_agreement"], r["perplexity_ratio"]
        (0.0, 1.0, 1.0)
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all tokens seen so far."""
        self._vocab: int | None = None
        self._n = 0
        self._n_targets = 0
        self._kl = 0.0
        self._agree = 0
        self._nll_t = 0.0
        self._nll_s = 0.0

    @property
    def n(self) -> int:
        """Number of token positions accumulated."""
        return self._n

    def _check_vocab(self, vocab: int) -> None:
        if self._vocab is None:
            self._vocab = vocab
        elif vocab != self._vocab:
            raise ValueError(
                f"vocabulary size changed from {self._vocab} to {vocab} between updates; "
                "logit fidelity needs one tokenizer"
            )

    def update(self, teacher_logits, analog_logits, targets=None) -> None:
        """Add token positions.

        Args:
            teacher_logits: array or tensor [n, V].
            analog_logits: array or tensor [n, V] at the same positions.
            targets: integer array or tensor [n] of the actual next tokens, or None.

        Raises:
            ValueError: the vocabularies differ, shapes disagree, NaN or +inf
                logits, or targets that are not integers in [0, V).
        """
        t = _as_logits(teacher_logits, "teacher_logits")
        s = _as_logits(analog_logits, "analog_logits").to(t.device)
        dtype = torch.promote_types(t.dtype, s.dtype)
        t, s = t.to(dtype), s.to(dtype)
        if t.shape[1] != s.shape[1]:
            raise ValueError(
                f"teacher and analog vocabularies differ (V = {t.shape[1]} vs {s.shape[1]}); "
                "logit fidelity needs one tokenizer shared by both models"
            )
        if t.shape[0] != s.shape[0]:
            raise ValueError(f"teacher_logits has {t.shape[0]} rows but analog_logits has {s.shape[0]}")
        n, vocab = t.shape
        self._check_vocab(vocab)
        if targets is not None:
            targets = torch.as_tensor(targets).to(t.device)
            if targets.shape != (n,) or targets.dtype.is_floating_point or targets.dtype == torch.bool:
                raise ValueError(
                    f"targets must be an integer tensor of shape ({n},), "
                    f"got {targets.dtype} of shape {tuple(targets.shape)}"
                )
            if n and not (0 <= int(targets.min()) and int(targets.max()) < vocab):
                raise ValueError(
                    f"targets must be token ids in [0, {vocab}), "
                    f"got values from {int(targets.min())} to {int(targets.max())}"
                )
            targets = targets.long()
        chunk = max(1, _CHUNK_ELEMENTS // vocab)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            self._add(*_logit_fidelity_update(t[part], s[part], None if targets is None else targets[part]))
        self._count(n, targets is not None)

    def _add(self, kl: float, agree: int, nll_t: float, nll_s: float) -> None:
        """Add one chunk's sums (`_logit_fidelity_update`)."""
        self._kl += kl
        self._agree += agree
        self._nll_t += nll_t
        self._nll_s += nll_s

    def _count(self, n: int, with_targets: bool) -> None:
        self._n += n
        if with_targets:
            self._n_targets += n

    def merge(self, other: StreamingLogitFidelity) -> None:
        """Add the tokens accumulated by `other`.

        Raises:
            TypeError: `other` is not of this class.
            ValueError: the vocabulary sizes differ.
        """
        if type(other) is not type(self):  # an exact KL and a top-k KL do not add up
            raise TypeError(f"other must be a {type(self).__name__}, got {type(other).__name__}")
        if other._vocab is not None:
            self._check_vocab(other._vocab)
        self._n += other._n
        self._n_targets += other._n_targets
        self._kl += other._kl
        self._agree += other._agree
        self._nll_t += other._nll_t
        self._nll_s += other._nll_s

    def compute(self) -> LogitFidelityResult:
        """Means over all tokens seen (perplexities over the tokens that came with targets).

        Returns:
            A `LogitFidelityResult` dict; all values NaN (with a warning) before any update.
        """
        nan = float("nan")
        if self._n == 0:
            nan = nan_with_warning("StreamingLogitFidelity.compute() called before any update(); returning NaN")
            return LogitFidelityResult(
                kl=nan, top1_agreement=nan, perplexity_teacher=nan,
                perplexity_analog=nan, perplexity_ratio=nan, n_tokens=0,
            )  # fmt: skip
        ppl_t = ppl_s = ratio = nan
        if self._n_targets:
            ppl_t = math.exp(self._nll_t / self._n_targets)
            ppl_s = math.exp(self._nll_s / self._n_targets)
            ratio = math.exp((self._nll_s - self._nll_t) / self._n_targets)
        return LogitFidelityResult(
            kl=self._kl / self._n, top1_agreement=self._agree / self._n, perplexity_teacher=ppl_t,
            perplexity_analog=ppl_s, perplexity_ratio=ratio, n_tokens=self._n,
        )  # fmt: skip


def logit_fidelity(teacher_logits, analog_logits, targets=None) -> LogitFidelityResult:
    """Functional form of `StreamingLogitFidelity` for one batch.

    Args:
        teacher_logits: array or tensor [n, V].
        analog_logits: array or tensor [n, V].
        targets: integer array or tensor [n] of next tokens, or None.

    Returns:
        A `LogitFidelityResult` dict.
    """
    metric = StreamingLogitFidelity()
    metric.update(teacher_logits, analog_logits, targets)
    return metric.compute()


def teacher_top_k(teacher_logits, k: int, targets=None) -> dict[str, torch.Tensor]:
    """What a teacher reference keeps of each next-token distribution: its top-k and the rest as one bucket.

    Args:
        teacher_logits: array or tensor [n, V].
        k: tokens kept per position (at most V).
        targets: integer array or tensor [n] of the actual next tokens, or None.

    Returns:
        ``ids`` [n, k] (int64, most likely first), ``logprobs`` [n, k] and ``tail`` [n] (the log of the
        probability mass outside the top k; −inf when k = V), in float32 or float64 as the logits; with
        ``targets`` also ``target`` [n], the log-probability of each actual next token.
    """
    t = _as_logits(teacher_logits, "teacher_logits")
    k = min(k, t.shape[1])
    log_t = torch.log_softmax(t, dim=-1)
    logprobs, ids = log_t.topk(k, dim=-1)
    out = {"ids": ids, "logprobs": logprobs, "tail": log_t.scatter(1, ids, -math.inf).logsumexp(-1)}
    if targets is not None:
        out["target"] = log_t.gather(1, torch.as_tensor(targets, device=t.device).long()[:, None])[:, 0]
    return out


def _top_k_update(ids, logprobs, tail, s: torch.Tensor, target, targets):
    """Sums for one chunk: (Σ top-k KL, #top-1 agreements, Σ teacher NLL, Σ analog NLL) as floats."""
    log_s = torch.log_softmax(s, dim=-1)
    log_q = log_s.gather(1, ids)
    log_q_tail = log_s.scatter(1, ids, -math.inf).logsumexp(-1)
    p, p_tail = logprobs.double().exp(), tail.double().exp()
    # where the teacher puts no mass the term is 0, not 0·(−inf) = NaN
    kept = torch.where(p > 0, p * (logprobs.double() - log_q.double()), 0.0).sum(-1)
    rest = torch.where(p_tail > 0, p_tail * (tail.double() - log_q_tail.double()), 0.0)
    kl = (kept + rest).clamp_(min=0)  # rounding can leave −1e-9 for p ≈ q
    agree = int((ids[:, 0] == s.argmax(-1)).sum())
    if targets is None:
        return float(kl.sum()), agree, 0.0, 0.0
    nll_s = -log_s.gather(1, targets[:, None]).sum(dtype=torch.float64)
    return float(kl.sum()), agree, float(-target.double().sum()), float(nll_s)


class StreamingTopKLogitFidelity(StreamingLogitFidelity):
    """KL(teacher ‖ analog), top-1 agreement and perplexities from the teacher's top-k alone (`teacher_top_k`).

    The teacher's distribution is its top k tokens plus one bucket for the rest,
    and the analog's is coarsened the same way, so the KL is that of the two
    coarsened distributions: a lower bound of the exact KL (data-processing
    inequality), equal to it when k = V. Top-1 agreement compares the teacher's
    most likely token with the analog's argmax; perplexities read the teacher's
    stored log-probability of each actual next token. Sums are float64 and
    `merge` is exact, as in `StreamingLogitFidelity`.

    Example:
        >>> import torch
        >>> logits, targets = torch.randn(5, 11), torch.arange(5)
        >>> m = StreamingTopKLogitFidelity()
        >>> m.update(teacher_top_k(logits, 3, targets), logits, targets=targets)
        >>> r = m.compute()
        >>> r["kl"], r["top1_agreement"], r["perplexity_ratio"]
        (0.0, 1.0, 1.0)
    """

    def update(self, teacher, analog_logits, targets=None) -> None:  # noqa: D417 - the parent's arguments, teacher aside
        """Add token positions.

        Args:
            teacher: the teacher's `teacher_top_k` at these positions (with ``target`` when ``targets`` is given).
            analog_logits: array or tensor [n, V] of the analog, V the teacher's vocabulary.
            targets: integer array or tensor [n] of the actual next tokens, or None.

        Raises:
            ValueError: shapes disagree, NaN or +inf logits, ids or targets outside [0, V), or targets
                without the teacher's target log-probabilities.
        """
        s = _as_logits(analog_logits, "analog_logits")
        ids, logprobs, tail = (torch.as_tensor(teacher[key]).to(s.device) for key in ("ids", "logprobs", "tail"))
        n, vocab = s.shape
        if ids.shape != logprobs.shape or ids.ndim != 2 or ids.shape[0] != n or tail.shape != (n,):
            raise ValueError(
                f"teacher top-k ids {tuple(ids.shape)}, logprobs {tuple(logprobs.shape)} and tail {tuple(tail.shape)} "
                f"do not match {n} analog rows"
            )
        if n and not (0 <= int(ids.min()) and int(ids.max()) < vocab):
            raise ValueError(f"teacher top-k ids must be token ids in [0, {vocab}) of the analog's logits")
        self._check_vocab(vocab)
        target = None
        if targets is not None:
            if "target" not in teacher:
                raise ValueError("targets were given but the teacher's top-k holds no 'target' log-probabilities")
            targets = torch.as_tensor(targets).to(s.device).long()
            target = torch.as_tensor(teacher["target"]).to(s.device)
            if targets.shape != (n,) or target.shape != (n,) or (n and not 0 <= int(targets.min()) <= int(targets.max()) < vocab):
                raise ValueError(f"targets must be {n} token ids in [0, {vocab}), with the teacher's log-probability of each")
        ids = ids.long()
        chunk = max(1, _CHUNK_ELEMENTS // vocab)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            self._add(*_top_k_update(
                ids[part], logprobs[part], tail[part], s[part],
                None if target is None else target[part], None if targets is None else targets[part],
            ))  # fmt: skip
        self._count(n, targets is not None)


def top_k_logit_fidelity(teacher, analog_logits, targets=None) -> LogitFidelityResult:
    """Functional form of `StreamingTopKLogitFidelity` for one batch (``teacher`` from `teacher_top_k`)."""
    metric = StreamingTopKLogitFidelity()
    metric.update(teacher, analog_logits, targets)
    return metric.compute()
