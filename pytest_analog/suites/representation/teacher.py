"""The representation run's teacher half: what the teacher contributes to the representation, embeddings and
logits suites, computed once (`teacher_part`) and read back for any analog (`TeacherRows`).

The teacher reads every prompt once, in batches. The part keeps every *kept*
teacher position (not a special token, not position 0 with
``positions.skip_first``): its hidden state at each gated layer, and, where a
next token follows, the teacher's top-k next-token log-probabilities
(`metrics.teacher_top_k`). Every alignment compares a subset of these positions
(all of them with the teacher's tokenizer, the last sub-token of each word with
another), so one part serves analogs with any tokenizer. Besides: a seeded
sample of kept positions at every teacher layer (the layer matrix), and seeded
samples of the teacher's vocabulary with their input-embedding and unembedding
rows. Hidden states and embedding rows are stored in ``reference.dtype``. Under
``accelerate launch`` the batches are split over the processes and gathered in
batch order (`processes`): the same part as one process builds.

Tensors (``N`` kept positions, ``M`` with a next token, ``P`` prompts):

- ``tokens`` [sum of prompt lengths], ``offsets.tokens`` [P + 1]: the teacher's token ids of every prompt;
- ``positions`` [N], ``offsets.kept`` [P + 1]: each prompt's kept positions;
- ``hidden.{layer}`` [N, d] at each gated layer;
- ``matrix.rows`` [S] (indices into the N kept rows), ``matrix.{layer}`` [S, d] at every layer 0..L;
- ``logits.ids``, ``logits.logprobs`` [M, k], ``logits.tail``, ``logits.target`` [M], ``offsets.logits`` [P + 1]:
  row j of a prompt is its j-th kept position (all but a last position have a next token); only in a part
  built ``with_logits`` (the teacher's vocabulary-wide output costs about a quarter of its forward pass);
- ``embedding`` and ``unembedding`` [R, d], the rows of the tokens in meta ``embedding_tokens`` and
  ``unembedding_tokens`` (absent when the teacher has no such matrix).
"""

from __future__ import annotations

import numpy as np
import torch

from pytest_analog.capture import encode, forward, kept_positions
from pytest_analog.errors import AnalogError
from pytest_analog.layers import gated_layers
from pytest_analog.metrics import teacher_top_k
from pytest_analog.reference import processes
from pytest_analog.part import Part
from pytest_analog.progress import progress_bar

EMBEDDINGS = {"embedding": "get_input_embeddings", "unembedding": "get_output_embeddings"}
_TOP_K_ROWS = 32  # next-token rows whose vocabulary-wide log-softmax is taken at once


def teacher_part(teacher, config, *, prompts, with_logits: bool = True) -> Part:
    """The teacher's contribution to the representation run over ``prompts``, with a progress bar.

    Args:
        teacher: the loaded teacher (`models.LoadedModel`); the only place its model runs for these suites.
        config: the effective `Config` (the settings `suites.representation.RUN.teacher_reads` names).
        prompts: the `PromptSet`.
        with_logits: also keep the teacher's top-k next-token log-probabilities (what logit fidelity reads).

    Raises:
        AnalogError: a half-precision ``reference.dtype`` cannot hold the teacher's hidden states.
    """
    ids, kept = [], []
    for text in prompts.texts:
        tokens, special, _ = encode(teacher.tokenizer, text, config.prompts.max_length)
        ids.append(tokens)
        kept.append(kept_positions(special, config.positions.skip_first))
    starts = {"tokens": _offsets(map(len, ids)), "kept": _offsets(map(len, kept)),
              "logits": _offsets(int((k + 1 < len(t)).sum()) for t, k in zip(ids, kept))}
    layers = gated_layers(config, teacher.num_layers)
    dtype = storage_dtype(config.reference.dtype, next(teacher.model.parameters()).dtype)
    n_kept, d = int(starts["kept"][-1]), teacher.info["hidden_size"]
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(n_kept, size=min(config.layers.matrix_rows, n_kept), replace=False))
    vocab = min(len(teacher.tokenizer), teacher.model.config.get_text_config().vocab_size)  # as the logits are cut
    k = min(config.logits.top_k, vocab)
    n_logits = int(starts["logits"][-1])
    tensors = {
        **{f"hidden.{i}": torch.empty(n_kept, d, dtype=dtype) for i in layers},
        **{f"matrix.{i}": torch.empty(len(sample), d, dtype=dtype) for i in range(teacher.num_layers + 1)},
    }
    if with_logits:
        tensors["logits.ids"] = torch.empty(n_logits, k, dtype=torch.int64)
        tensors.update({f"logits.{key}": torch.empty(n_logits, *shape)
                        for key, shape in (("logprobs", (k,)), ("tail", ()), ("target", ()))})
    order = sorted(range(len(ids)), key=lambda p: len(ids[p]))  # batched by length: less padding
    batches = [order[first : first + config.batch_size] for first in range(0, len(order), config.batch_size)]
    device = teacher.input_device.type
    progress = progress_bar(sum(len(ids[p]) for b in processes.share(len(batches), device) for p in batches[b]),
                            "teacher reference: representation (tokens)")
    def fill(rows):
        kept_rows, hidden, sample_rows, matrix, logit_rows, top = rows
        for i in layers:
            tensors[f"hidden.{i}"][kept_rows] = hidden[i]
        for i in range(teacher.num_layers + 1):
            tensors[f"matrix.{i}"][sample_rows] = matrix[i]
        for key, value in top.items():
            tensors[f"logits.{key}"][logit_rows] = value

    alone, done = processes.processes(device)[1] == 1, {}
    for b in processes.share(len(batches), device):  # every batch, or this process's share under accelerate launch
        rows = _batch_rows(teacher, batches[b], ids, kept, layers, sample, starts, vocab, k if with_logits else 0, dtype, config)
        if alone:
            fill(rows)
        else:
            done[b] = rows
        progress.update(sum(len(ids[p]) for p in batches[b]))
    progress.close()
    for rows in processes.gathered(done, device) if not alone else ():  # in batch order: the one-process part
        fill(rows)
    tensors.update({
        "tokens": torch.tensor([t for tokens in ids for t in tokens], dtype=torch.int64),
        "positions": torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *kept]).astype(np.int64)),
        "matrix.rows": torch.from_numpy(sample.astype(np.int64)),
        **{f"offsets.{name}": torch.from_numpy(values) for name, values in starts.items()},
    })  # fmt: skip
    embeddings, tokens = _embedding_rows(teacher, config, dtype)
    meta = {"layers": layers, "num_layers": teacher.num_layers, "n_prompts": len(ids), "top_k": k if with_logits else 0, "vocab": vocab,
            "dtype": str(dtype).removeprefix("torch."), **tokens}
    return Part({**tensors, **embeddings}, meta)


def _batch_rows(teacher, chunk, ids, kept, layers, sample, starts, vocab, k, dtype, config) -> tuple:
    """One batch's forward pass, on the CPU: (the part's kept rows of its prompts, their hidden states at each
    gated layer, the matrix sample's rows among them, their hidden states at every layer, the part's
    next-token rows and, when k > 0, their top-k log-probs), each gathered with one index per layer."""
    with torch.inference_mode():
        out = forward(teacher, [ids[p] for p in chunk], with_logits=k > 0)
    width = out.hidden_states[0].shape[1]
    kept_rows = np.concatenate([np.arange(starts["kept"][p], starts["kept"][p + 1]) for p in chunk])
    places = [b * width + kept[p] for b, p in enumerate(chunk)]  # each prompt's kept positions in [batch x width]
    at = np.concatenate(places)
    in_sample = np.isin(kept_rows, sample)
    sample_rows = np.searchsorted(sample, kept_rows[in_sample])
    hidden = {i: _stored(_flat(out.hidden_states[i], at), dtype, config.reference.dtype) for i in layers}
    matrix = [_stored(_flat(out.hidden_states[i], at[in_sample]), dtype, config.reference.dtype)
              for i in range(teacher.num_layers + 1)]
    top, logit_rows = {}, np.zeros(0, dtype=np.int64)
    if k:
        has_next = {p: kept[p] + 1 < len(ids[p]) for p in chunk}
        logit_rows = np.concatenate([np.arange(starts["logits"][p], starts["logits"][p + 1]) for p in chunk])
        nexts = np.concatenate([place[has_next[p]] for place, p in zip(places, chunk)])
        targets = torch.from_numpy(np.concatenate([np.asarray(ids[p])[kept[p][has_next[p]] + 1] for p in chunk]))
        logits, nexts = out.logits.reshape(-1, out.logits.shape[-1]), torch.from_numpy(nexts).to(out.logits.device)
        tops = [teacher_top_k(logits[nexts[start : start + _TOP_K_ROWS], :vocab], k, targets[start : start + _TOP_K_ROWS])
                for start in range(0, len(nexts), _TOP_K_ROWS)]  # in chunks: a vocabulary-wide softmax stays in cache
        top = {key: torch.cat([t[key] for t in tops]).cpu() for key in tops[0]} if tops else {}
    return (torch.from_numpy(kept_rows), hidden, torch.from_numpy(sample_rows), matrix, torch.from_numpy(logit_rows), top)


def _flat(hidden: torch.Tensor, at: np.ndarray) -> torch.Tensor:
    """Rows ``at`` of a [batch, width, d] hidden state read as [batch x width, d]."""
    return hidden.reshape(-1, hidden.shape[-1])[torch.from_numpy(at).to(hidden.device)]


def storage_dtype(setting: str, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype of stored activations: ``reference.dtype``, or the model's for ``model``."""
    return model_dtype if setting == "model" else getattr(torch, setting)


def _stored(rows: torch.Tensor, dtype: torch.dtype, setting: str) -> torch.Tensor:
    stored = rows.to("cpu", dtype)
    if torch.finfo(dtype).max >= torch.finfo(rows.dtype).max:  # as wide: nothing can overflow
        return stored
    if not bool(torch.isfinite(stored).all()) and bool(torch.isfinite(rows).all()):
        raise AnalogError(
            f"reference.dtype {setting} cannot hold the teacher's hidden states (largest |value| "
            f"{float(rows.abs().max()):.3g}); use bfloat16 or float32"
        )
    return stored


def _offsets(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(list(lengths))]).astype(np.int64)


def _embedding_rows(teacher, config, dtype) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Per (un)embedding matrix, a seeded sample of ``embeddings.rows`` vocabulary tokens with non-zero rows
    (a padding row has no direction): their rows and, in meta, their strings."""
    vocab = teacher.tokenizer.get_vocab()
    strings = sorted(vocab)  # by string, so that an analog with the same tokenizer draws the same sample
    ids = np.asarray([vocab[s] for s in strings], dtype=np.int64)
    rows, tokens = {}, {}
    for name, getter in EMBEDDINGS.items():
        module = getattr(teacher.model, getter)()
        if module is None:
            continue
        weight = module.weight.detach()
        keep = usable_rows(weight, ids)
        rng = np.random.default_rng(config.seed)
        drawn = np.sort(rng.choice(np.flatnonzero(keep), size=min(config.embeddings.rows, int(keep.sum())), replace=False))
        rows[name] = weight[torch.from_numpy(ids[drawn])].to("cpu", dtype)
        tokens[f"{name}_tokens"] = [strings[j] for j in drawn]
    return rows, tokens


def usable_rows(weight: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """Which of the token ``ids`` (-1: absent) index a row of ``weight`` that is not all zero (a padding
    embedding has no direction to compare)."""
    keep = (ids >= 0) & (ids < weight.shape[0])
    keep[keep] &= (weight.norm(dim=1) > 0).cpu().numpy()[ids[keep]]
    return keep


def part_problem(part: Part, teacher: dict) -> str | None:
    """The first way a representation part does not fit the schema above and the teacher record (its depth,
    width and vocabulary), as a phrase, or None: checked when the part is read, before any test reads it."""
    meta, t = part.meta, part.tensors
    depth, width = teacher["num_layers"], teacher["hidden_size"]
    tokenizer = teacher.get("tokenizer", {}).get("vocab_size") if isinstance(teacher.get("tokenizer"), dict) else None
    for name, kind in (("layers", list), ("num_layers", int), ("n_prompts", int), ("top_k", int), ("vocab", int), ("dtype", str)):
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            return f"data's {name} is {meta.get(name)!r:.60}, not a JSON {kind.__name__}"
    if meta["num_layers"] != depth:
        return f"data has {meta['num_layers']} layers; the teacher record has {depth}"
    if not all(isinstance(i, int) and 0 <= i <= depth for i in meta["layers"]) or not meta["layers"]:
        return f"data's layers {meta['layers']!r:.60} are not teacher layers 0..{depth}"
    n_prompts, k, vocab = meta["n_prompts"], meta["top_k"], meta["vocab"]
    if n_prompts < 0 or k < 0 or not 0 < vocab <= (tokenizer if isinstance(tokenizer, int) else vocab) or k > vocab:
        return f"data's n_prompts {n_prompts}, top_k {k} or vocab {vocab} is out of range"
    expected = {name: (False, [None if name in ("tokens", "positions", "matrix.rows") else n_prompts + 1])
                for name in ("tokens", "offsets.tokens", "positions", "offsets.kept", "matrix.rows", "offsets.logits")}
    problem = _tensors_problem(t, expected)
    if problem:
        return problem
    n_kept, sample, n_logits = len(t["positions"]), len(t["matrix.rows"]), int(t["offsets.logits"][-1])
    expected.update({f"hidden.{i}": (True, [n_kept, width]) for i in meta["layers"]})
    expected.update({f"matrix.{i}": (True, [sample, width]) for i in range(depth + 1)})
    if k:
        expected.update({"logits.ids": (False, [n_logits, k]), "logits.logprobs": (True, [n_logits, k]),
                         "logits.tail": (True, [n_logits]), "logits.target": (True, [n_logits])})
    for name in EMBEDDINGS:
        tokens = meta.get(f"{name}_tokens")
        if tokens is not None and not (isinstance(tokens, list) and all(isinstance(s, str) for s in tokens)):
            return f"data's {name}_tokens is not a list of token strings"
        if tokens is not None:
            expected[name] = (True, [len(tokens), width])
    problem = _tensors_problem(t, expected, complete=True)
    if problem:
        return problem
    for name in (n for n in expected if n.startswith(("hidden.", "matrix.")) and n != "matrix.rows"):
        if str(t[name].dtype).removeprefix("torch.") != meta["dtype"]:
            return f"tensor {name} is {str(t[name].dtype).removeprefix('torch.')}; its data says {meta['dtype']}"
    lengths, kept = _counts(t["offsets.tokens"], len(t["tokens"])), _counts(t["offsets.kept"], n_kept)
    if lengths is None or kept is None:
        return "offsets.tokens or offsets.kept do not run from 0 to its token or kept row count"
    prompt = torch.repeat_interleave(torch.arange(n_prompts), kept)
    positions, same = t["positions"], prompt[1:] == prompt[:-1]
    if bool((positions < 0).any() | (positions >= lengths[prompt]).any() | (same & (positions[1:] <= positions[:-1])).any()):
        return "positions are not increasing positions inside each prompt"
    if bool((t["tokens"] < 0).any()) or bool(((t["matrix.rows"] < 0) | (t["matrix.rows"] >= n_kept)).any()):
        return "tokens or matrix.rows are out of range"
    per_prompt = _counts(t["offsets.logits"], n_logits)
    if per_prompt is None or bool((per_prompt > kept).any()):
        return "offsets.logits do not give each prompt at most one next-token row per kept position"
    if k:
        if bool(((t["logits.ids"] < 0) | (t["logits.ids"] >= vocab)).any()):
            return f"logits.ids holds token ids outside the vocabulary of {vocab}"
    return None


def _tensors_problem(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[bool, list]], complete: bool = False) -> str | None:
    """The first tensor of ``expected`` (name -> (floating point?, shape; None: any length)) that is missing or
    of another kind or shape; with ``complete``, also one that is not expected."""
    for name, (floating, shape) in expected.items():
        if name not in tensors:
            return f"holds no tensor {name}"
        tensor = tensors[name]
        kind = "floating point" if floating else "int64"
        if not (tensor.is_floating_point() if floating else tensor.dtype == torch.int64):
            return f"tensor {name} is {str(tensor.dtype).removeprefix('torch.')}, not {kind}"
        if tensor.ndim != len(shape) or any(want is not None and got != want for got, want in zip(tensor.shape, shape)):
            return f"tensor {name} has shape {list(tensor.shape)}; the teacher record and the part's data ask for {shape}"
    extra = sorted(set(tensors) - set(expected)) if complete else []
    return f"holds the unexpected tensor {extra[0]}" if extra else None


def _counts(offsets: torch.Tensor, total: int) -> torch.Tensor | None:
    """Each prompt's count from its offsets, or None unless they rise from 0 to ``total``."""
    counts = offsets.diff()
    return counts if offsets[0] == 0 and offsets[-1] == total and not bool((counts < 0).any()) else None


class TeacherRows:
    """The teacher's side of one analog run: the part's rows for the prompts and positions the plan compares.

    Raises:
        AnalogError: (one line) the part was built over another number of prompts or other gated layers, or
            its token ids differ from the tokenization of the prompts here (another tokenizer or max_length).
    """

    def __init__(self, part: Part, plan, n_prompts: int, layers: list[int]):
        self.part, t = part, part.tensors
        if part.meta["n_prompts"] != n_prompts or part.meta["layers"] != layers:
            raise AnalogError(
                f"the teacher reference's representation part holds {part.meta['n_prompts']} prompts at layers "
                f"{part.meta['layers']}; this run compares {n_prompts} prompts at layers {layers}"
            )
        self.kept = {}  # prompt -> its kept positions' row numbers in the part
        for prompt in plan.prompts:
            k = prompt.index
            stored = t["tokens"][t["offsets.tokens"][k] : t["offsets.tokens"][k + 1]].tolist()
            if stored != list(prompt.teacher_ids):
                raise AnalogError(
                    f"the teacher reference's token ids of prompt {k} differ from its tokenizer's tokenization here "
                    f"({len(stored)} vs {len(prompt.teacher_ids)} tokens): it was built with another tokenizer or prompts.max_length"
                )
            self.kept[k] = (int(t["offsets.kept"][k]), t["positions"][t["offsets.kept"][k] : t["offsets.kept"][k + 1]].numpy())

    def rows(self, prompt, positions: np.ndarray) -> np.ndarray:
        """The part's row numbers of the teacher ``positions`` of ``prompt`` (an `Aligned`)."""
        start, kept = self.kept[prompt.index]
        local = np.searchsorted(kept, positions)
        if len(positions) and (local.max() >= len(kept) or (kept[local] != positions).any()):
            raise AnalogError(f"the teacher reference holds no hidden state at some compared position of prompt {prompt.index}")
        return start + local

    def logit_rows(self, prompt, positions: np.ndarray) -> np.ndarray:
        """The part's next-token rows of the teacher ``positions`` of ``prompt`` (each has a next token)."""
        start, _ = self.kept[prompt.index]
        return self.rows(prompt, positions) - start + int(self.part.tensors["offsets.logits"][prompt.index])

    def hidden(self, layer: int, rows) -> torch.Tensor:
        """Stored hidden states at a gated layer, widened to at least float32 (half-precision norms overflow)."""
        return _wide(self.part.tensors[f"hidden.{layer}"][torch.as_tensor(rows)])

    def matrix(self, layer: int, rows) -> torch.Tensor:
        """The layer-matrix sample's rows (indices into ``matrix.rows``) at any teacher layer."""
        return _wide(self.part.tensors[f"matrix.{layer}"][torch.as_tensor(rows)])

    def top_k(self, rows) -> dict[str, torch.Tensor]:
        """The teacher's `teacher_top_k` at next-token rows."""
        if "logits.ids" not in self.part.tensors:
            raise AnalogError("the teacher's representation part holds no logits: it was built for a run without the logits suite")
        rows = torch.as_tensor(rows)
        return {key: self.part.tensors[f"logits.{key}"][rows] for key in ("ids", "logprobs", "tail", "target")}


def _wide(rows: torch.Tensor) -> torch.Tensor:
    return rows.float() if rows.dtype in (torch.float16, torch.bfloat16) else rows
