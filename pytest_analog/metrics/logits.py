"""Output fidelity of an analog that shares its teacher's tokenizer.

Compares next-token distributions position by position: forward KL(teacher ‖
analog), top-1 agreement and, given the actual next tokens, each model's
perplexity.
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
            kl, agree, nll_t, nll_s = _logit_fidelity_update(
                t[part], s[part], None if targets is None else targets[part]
            )
            self._kl += kl
            self._agree += agree
            self._nll_t += nll_t
            self._nll_s += nll_s
        self._n += n
        if targets is not None:
            self._n_targets += n

    def merge(self, other: StreamingLogitFidelity) -> None:
        """Add the tokens accumulated by `other`.

        Raises:
            TypeError: `other` is not a StreamingLogitFidelity.
            ValueError: the vocabulary sizes differ.
        """
        if not isinstance(other, StreamingLogitFidelity):
            raise TypeError(f"other must be a StreamingLogitFidelity, got {type(other).__name__}")
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
