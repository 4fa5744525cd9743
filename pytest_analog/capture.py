"""Activation capture: each model reads a prompt set once; every metric reads that pass.

Layer convention, used everywhere in pytest-analog: **layer i is
``hidden_states[i]``**. Layer 0 is the embedding output, layer i >= 1 the output
of block i-1, and the last layer (``num_layers``) is, in most architectures,
after the final norm. A model with L blocks has layers 0..L.

Rows are aligned between the two models before any metric sees them:

- same tokenizer: token positions align one to one; padding, special tokens the
  tokenizer added (BOS) and, by default, the first position of every sequence
  (the attention sink) are left out;
- different tokenizers: the last sub-token of each whitespace word, from the
  tokenizers' character offsets; where truncation cuts the two tokenizations
  at different words, the words both hold (a shared prefix) are compared.

Each prompt also yields one mean-pooled vector per layer (over the same kept
positions; with word alignment, those up to the last compared word) for
sequence-level metrics.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pytest_analog.errors import AnalogError


@dataclass
class Aligned:
    """One prompt's token ids in both models and the positions compared."""

    teacher_ids: list[int]
    analog_ids: list[int]
    teacher_rows: np.ndarray  # positions in teacher tokens, aligned one to one with analog_rows
    analog_rows: np.ndarray
    teacher_pool: np.ndarray  # positions averaged into the prompt's sequence vector
    analog_pool: np.ndarray
    index: int  # the prompt's place in the prompt set


@dataclass
class Plan:
    """The alignment of a whole prompt set, computed from tokenization alone."""

    mode: str  # "token" or "word"
    prompts: list[Aligned]
    dropped: int
    skip_first: bool

    @property
    def n_rows(self) -> int:
        return sum(len(p.teacher_rows) for p in self.prompts)

    @property
    def positions(self) -> str:
        """What the report says about the positions compared."""
        first = " and the first position of each sequence (attention sink)" if self.skip_first else ""
        if self.mode == "token":
            return f"every token except padding, tokenizer-added special tokens{first}"
        return f"the last sub-token of each whitespace word, except special tokens{first}"


@dataclass
class Batch:
    """Activations of one batch of prompts; rows are gathered only for the layers a metric reads."""

    row_start: int  # index of this batch's first aligned row in capture order
    n_rows: int
    prompts: list[int]  # plan indices of this batch's prompts, in row order
    _teacher: tuple | None  # hidden_states of each model: per layer [batch, tokens, d]; None: the teacher did not run
    _analog: tuple
    _index: tuple  # (teacher, analog) flat (prompt, position) indices of the aligned rows
    _pool: tuple  # (teacher, analog) pooling weights [batch, tokens]
    device: object
    teacher_logits: object = None  # [logit_rows, V] (same tokenizer only)
    analog_logits: object = None
    targets: object = None  # [logit_rows] next-token ids
    _control: tuple = ()  # hidden_states of each chance control (one per seed), which read the analog's tokens

    def teacher(self, layer: int, rows=None):
        """Aligned rows of a teacher layer [rows, d_t]; ``rows`` selects a subset of this batch's rows."""
        return _gather(self._teacher[layer], self._index[0], rows, self.device)

    def analog(self, layer: int, rows=None):
        """Aligned rows of an analog layer [rows, d_s], row for row with `teacher`."""
        return _gather(self._analog[layer], self._index[1], rows, self.device)

    def teacher_pooled(self, layer: int):
        """Mean-pooled teacher layer, one row per prompt [prompts, d_t]."""
        return _pool(self._teacher[layer], self._pool[0], self.device)

    def analog_pooled(self, layer: int):
        """Mean-pooled analog layer, one row per prompt [prompts, d_s]."""
        return _pool(self._analog[layer], self._pool[1], self.device)

    def control(self, layer: int, rows=None, which: int = 0):
        """Aligned rows of a layer of chance control ``which`` [rows, d_s], row for row with `teacher`."""
        return _gather(self._control[which][layer], self._index[1], rows, self.device)

    def control_pooled(self, layer: int, which: int = 0):
        return _pool(self._control[which][layer], self._pool[1], self.device)


def plan_alignment(teacher_tok, analog_tok, texts, *, same_tokenizer: bool, max_length: int, skip_first: bool) -> Plan:
    """Tokenize ``texts`` for both models and decide which positions are compared."""
    if same_tokenizer:
        prompts = [_token_aligned(k, *encode(teacher_tok, t, max_length), skip_first) for k, t in enumerate(texts)]
        return Plan("token", [p for p in prompts if len(p.teacher_rows)], sum(not len(p.teacher_rows) for p in prompts), skip_first)
    for tok in (teacher_tok, analog_tok):
        if not getattr(tok, "is_fast", False):
            raise AnalogError(
                f"tokenizer {tok.name_or_path} has no character offsets (not a fast tokenizer); "
                "word alignment between different tokenizers needs them"
            )
    kept, dropped = [], 0
    for k, text in enumerate(texts):
        aligned = _word_aligned(k, text, encode(teacher_tok, text, max_length), encode(analog_tok, text, max_length), skip_first)
        if aligned is None:
            dropped += 1
        else:
            kept.append(aligned)
    return Plan("word", kept, dropped, skip_first)


def encode(tokenizer, text: str, max_length: int):
    """(token ids, special-token mask, character offsets or None) of ``text``, truncated to ``max_length``."""
    enc = tokenizer(
        text,
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_offsets_mapping=getattr(tokenizer, "is_fast", False),
    )
    return enc["input_ids"], np.asarray(enc["special_tokens_mask"], dtype=bool), enc.get("offset_mapping")


def kept_positions(special: np.ndarray, skip_first: bool) -> np.ndarray:
    """The positions any alignment may compare: not special and, with ``skip_first``, not position 0."""
    keep = ~special  # a new array: the caller's mask is untouched
    if skip_first:
        keep[0] = False
    return np.flatnonzero(keep)


def _token_aligned(index, ids, special, _offsets, skip_first) -> Aligned:
    rows = kept_positions(special, skip_first)
    return Aligned(ids, ids, rows, rows, rows, rows, index)


def _word_aligned(index: int, text: str, teacher, analog, skip_first: bool) -> Aligned | None:
    t_rows = _last_subtokens(text, *teacher, skip_first)
    a_rows = _last_subtokens(text, *analog, skip_first)
    shared = min(len(t_rows), len(a_rows))  # truncation may cut the two at different words: keep the words both hold
    t_rows, a_rows = np.asarray(t_rows[:shared], dtype=np.int64), np.asarray(a_rows[:shared], dtype=np.int64)
    # A word whose last sub-token is a left-out position (the sink) is left out in both models.
    keep = (t_rows >= 0) & (a_rows >= 0)
    if not keep.any():
        return None
    t_rows, a_rows = t_rows[keep], a_rows[keep]
    # each model's sequence vector averages the tokens of the same words
    t_pool, a_pool = kept_positions(teacher[1], skip_first), kept_positions(analog[1], skip_first)
    return Aligned(teacher[0], analog[0], t_rows, a_rows, t_pool[t_pool <= t_rows[-1]], a_pool[a_pool <= a_rows[-1]], index)


def _last_subtokens(text, ids, special, offsets, skip_first) -> list[int]:
    """For each whitespace word covered by the tokens, the index of its last sub-token (-1: left out)."""
    ends = np.asarray([end for _, end in offsets])
    starts = np.asarray([start for start, _ in offsets])
    usable = ~special & (ends > starts)
    covered = ends[usable].max() if usable.any() else 0
    rows = []
    position = 0
    for word in text.split():
        start = text.index(word, position)
        end = position = start + len(word)
        if end > covered:  # truncated away (or cut inside this word)
            break
        inside = np.flatnonzero(usable & (starts < end) & (ends > start))
        last = int(inside[-1]) if len(inside) else -1
        rows.append(-1 if (skip_first and last == 0) else last)
    return rows


def capture(pair, plan: Plan, *, batch_size: int, with_logits: bool, progress=None, control=None,
            teacher: bool = True) -> Iterator[Batch]:
    """Run the models over the plan's prompts once, in batches, and yield aligned activations.

    Prompts are batched by length (less padding); rows come out in that order,
    which ``row_start`` indexes. ``control``, a model with the analog's
    tokenizer (the chance baseline) or a list of them (one per seed), reads
    the same batches as the analog.
    ``teacher=False`` runs only the analog and the control (the teacher's side
    comes from a teacher reference): the batches hold no teacher activations,
    and with ``with_logits`` the analog's logits at the next-token rows.
    """
    order = sorted(range(len(plan.prompts)), key=lambda i: len(plan.prompts[i].teacher_ids))
    controls = [] if control is None else control if isinstance(control, (list, tuple)) else [control]
    device = (pair.teacher if teacher else pair.analog).input_device
    row_start = 0
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        chunk = [plan.prompts[i] for i in indices]
        with torch.inference_mode():
            t_out = forward(pair.teacher, [p.teacher_ids for p in chunk], with_logits) if teacher else None
            a_out = forward(pair.analog, [p.analog_ids for p in chunk], with_logits)
            c_outs = [forward(c, [p.analog_ids for p in chunk], False) for c in controls]
        t_index = _flat_index([p.teacher_rows for p in chunk])
        width = max(len(p.teacher_ids) for p in chunk)  # the teacher's padded width
        batch = Batch(
            row_start=row_start,
            n_rows=len(t_index[0]),
            prompts=indices,
            _teacher=t_out.hidden_states if teacher else None,
            _analog=a_out.hidden_states,
            _index=(t_index, _flat_index([p.analog_rows for p in chunk])),
            _pool=(_pool_weights([p.teacher_pool for p in chunk], width),
                   _pool_weights([p.analog_pool for p in chunk], a_out.hidden_states[0].shape[1])),
            device=device,
            _control=tuple(c.hidden_states for c in c_outs),
        )
        if with_logits:
            nexts = [next_token_rows(p) for p in chunk]
            index = _flat_index(nexts)
            vocab = min(len(pair.teacher.tokenizer), a_out.logits.shape[-1], *([t_out.logits.shape[-1]] if teacher else []))
            if teacher:
                batch.teacher_logits = _gather(t_out.logits[..., :vocab], index, None, device)
            batch.analog_logits = _gather(a_out.logits[..., :vocab], index, None, device)
            batch.targets = torch.tensor(
                [p.teacher_ids[r + 1] for p, rows in zip(chunk, nexts) for r in rows], device=device
            )
        row_start += batch.n_rows
        if progress is not None:
            progress.update(sum(len(p.teacher_ids) for p in chunk))
        yield batch


def next_token_rows(prompt: Aligned) -> np.ndarray:
    """The prompt's compared teacher positions that have a next token (where next-token logits are compared)."""
    return prompt.teacher_rows[prompt.teacher_rows + 1 < len(prompt.teacher_ids)]


def padded(model, sequences: list[list[int]], *, left: bool = False):
    """Token ids, attention mask and position ids of ``sequences`` padded to one width with the tokenizer's pad id.

    Right padding starts every sequence at index 0; left padding ends every one at the
    last index. Position ids count from 0 in each sequence, as generate() does.
    """
    width = max(map(len, sequences))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[i, span] = torch.tensor(seq)
        mask[i, span] = 1
    return ids, mask, (mask.cumsum(1) - 1).clamp_min(0)


def forward(model, sequences: list[list[int]], with_logits: bool):
    """One right-padded forward pass of a `LoadedModel` over token id lists, with every hidden state."""
    ids, mask, _ = padded(model, sequences)
    device = model.input_device
    # without logits, skip the vocabulary-wide output projection where the model allows it
    kwargs = {} if with_logits or not _accepts(model.model.forward, "logits_to_keep") else {"logits_to_keep": 1}
    return model.model(
        input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, use_cache=False, **kwargs
    )


def _accepts(function, name: str) -> bool:
    parameters = inspect.signature(function).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _flat_index(rows_per_prompt):
    b = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows_per_prompt)]).astype(np.int64)
    t = np.concatenate(rows_per_prompt).astype(np.int64)
    return torch.from_numpy(b), torch.from_numpy(t)


def _gather(hidden, index, rows, device):
    b, t = index
    if rows is not None:
        b, t = b[rows], t[rows]
    return hidden[b.to(hidden.device), t.to(hidden.device)].to(device)


def _pool_weights(positions, width: int):
    """[prompts, tokens] weights that average each prompt's pooled positions."""
    weights = torch.zeros(len(positions), width)
    for i, pos in enumerate(positions):
        weights[i, pos] = 1.0 / len(pos)
    return weights


def _pool(hidden, weights, device):
    w = weights.to(device=hidden.device, dtype=hidden.dtype)
    return torch.einsum("bt,btd->bd", w, hidden).to(device)
