"""Distillation data: the corpus as token chunks, and the teacher's targets cached once.

A corpus is a text file, a JSONL file (a ``"text"`` field per line), a folder
of those (``*.txt``, ``*.md``, ``*.jsonl``, read in name order),
``dataset:NAME[@SPLIT]`` for a `datasets` dataset (hub name or a
``save_to_disk`` folder, a ``text`` column), or ``builtin`` for the prose that
ships in ``fixtures/corpus/``. Documents are tokenized, joined with the EOS
token and cut into chunks of ``seq_len`` tokens; every ``1/heldout``-th chunk is
held out.

`teacher_targets` runs the teacher once over all chunks and keeps, per token,
its top-k log-probs at the training temperature, the log of the remaining mass
and, for hidden-state alignment, the mapped layers' hidden states (float16);
later runs and epochs read that file instead of the teacher.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pytest_analog.errors import AnalogError
from pytest_analog.resources import shipped

_SUFFIXES = (".txt", ".md", ".jsonl")


def read_texts(corpus) -> list[str]:
    """The documents of ``corpus`` (see the module docstring); a `datasets.Dataset` is taken as is."""
    if not isinstance(corpus, (str, Path)):
        return [str(t) for t in corpus["text"]]
    corpus = str(corpus)
    if corpus.startswith("dataset:"):
        return _dataset_texts(corpus.removeprefix("dataset:"))
    path = shipped("fixtures") / "corpus" if corpus == "builtin" else Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise AnalogError(f"corpus {corpus} does not exist; give a text or JSONL file, a folder, dataset:NAME or builtin")
    texts = [t for f in files for t in _file_texts(f)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise AnalogError(f"corpus {corpus} holds no text (looked for {', '.join(_SUFFIXES)} files)")
    return texts


def _file_texts(path: Path) -> list[str]:
    if path.suffix != ".jsonl":
        return [path.read_text(encoding="utf-8")]
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (ValueError, KeyError, TypeError):
            raise AnalogError(f'{path}:{number}: expected a JSON object with a "text" field') from None
    return texts


def _dataset_texts(spec: str) -> list[str]:
    import datasets

    name, _, split = spec.partition("@")
    try:
        if Path(name).is_dir():
            data = datasets.load_from_disk(name)
            data = data[split or "train"] if isinstance(data, datasets.DatasetDict) else data
        else:
            data = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:
        raise AnalogError(f"could not load dataset {name}: {' '.join(str(exc).split())[:200]}") from None
    if "text" not in data.column_names:
        raise AnalogError(f"dataset {name} has no 'text' column (columns: {', '.join(data.column_names)})")
    return [str(t) for t in data["text"]]


def token_chunks(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """[n, seq_len] token ids: the documents joined by EOS and cut into full chunks."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"] + eos]
    n = len(ids) // seq_len
    if n < 2:
        raise AnalogError(f"the corpus has {len(ids)} tokens, fewer than two chunks of seq_len={seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def split_rows(n: int, heldout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) chunk indices: every ``round(1/heldout)``-th chunk is held out, at least one."""
    stride = min(max(2, round(1 / heldout)), n)
    held = torch.zeros(n, dtype=torch.bool)
    held[stride - 1 :: stride] = True
    return torch.nonzero(~held)[:, 0], torch.nonzero(held)[:, 0]


@dataclass
class TeacherTargets:
    """The teacher's view of every chunk: [n, seq, k] top-k ids and log-probs, [n, seq] rest, hidden states."""

    ids: torch.Tensor
    logp: torch.Tensor
    rest: torch.Tensor
    hidden: dict[int, torch.Tensor]  # teacher layer -> [n, seq, d] float16

    def take(self, rows: torch.Tensor) -> TeacherTargets:
        return TeacherTargets(self.ids[rows], self.logp[rows], self.rest[rows], {k: v[rows] for k, v in self.hidden.items()})


@torch.no_grad()
def teacher_targets(teacher, chunks: torch.Tensor, *, temperature: float, top_k: int, layers: list[int],
                    batch_size: int = 8, path: Path | None = None, progress=None) -> TeacherTargets:
    """Run the teacher once over ``chunks`` (or read ``path`` written by an earlier run)."""
    from safetensors.torch import load_file, save_file

    if path is not None and path.is_file():
        try:
            return _unpack(load_file(str(path)))
        except Exception:  # a foreign or damaged file is recomputed, never trusted
            pass
    device = teacher.get_input_embeddings().weight.device
    parts = []
    for batch in chunks.split(batch_size):
        out = teacher(input_ids=batch.to(device), output_hidden_states=bool(layers))
        z = out.logits.float() / temperature
        total = torch.logsumexp(z, dim=-1, keepdim=True)
        values, ids = z.topk(min(top_k, z.shape[-1]), dim=-1)
        rest = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1) - total[..., 0]
        part = {"ids": ids.int().cpu(), "logp": (values - total).cpu(), "rest": rest.cpu()}
        part.update({f"hidden.{i}": out.hidden_states[i].half().cpu() for i in layers})
        parts.append(part)
        if progress is not None:
            progress.update(batch.numel())
    tensors = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return _unpack(tensors)


def _unpack(tensors: dict[str, torch.Tensor]) -> TeacherTargets:
    hidden = {int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith("hidden.")}
    return TeacherTargets(tensors["ids"], tensors["logp"], tensors["rest"], hidden)
