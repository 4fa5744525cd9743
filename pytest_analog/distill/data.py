"""Distillation data: the corpus as token chunks, and the teacher's targets cached once.

A corpus is a text file, a JSONL file (a ``"text"`` field per line), a folder
of those (``*.txt``, ``*.md``, ``*.jsonl``, read in name order),
``dataset:NAME[@SPLIT]`` for a `datasets` dataset (hub name or a
``save_to_disk`` folder, a ``text`` column), or ``builtin`` for the prose that
ships in ``fixtures/corpus/``. Documents are tokenized, joined with the EOS
token and cut into chunks of ``seq_len`` tokens; every ``1/heldout``-th chunk is
held out.

``generate:N`` is text the teacher writes itself (sequence-level distillation,
Kim & Rush 2016): `generate_texts` samples continuations of the seeds in
``fixtures/corpus/seeds.txt`` (written for this project, never the gate's
prompts) until N new tokens exist; `generated_corpus` caches them.

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
SEEDS = "seeds.txt"  # in fixtures/corpus: openings the teacher continues for generate:N, not corpus text


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
        files = [f for f in files if corpus != "builtin" or f.name != SEEDS]
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


def seed_texts() -> list[str]:
    """The shipped generation seeds: paragraphs of ``fixtures/corpus/seeds.txt``, blank-line separated."""
    text = (shipped("fixtures") / "corpus" / SEEDS).read_text(encoding="utf-8")
    return [part.strip("\n") for part in text.split("\n\n") if part.strip()]


@torch.no_grad()
def generate_texts(model, tokenizer, seeds: list[str], tokens: int, *, temperature: float, top_p: float,
                   new_tokens: int, seed: int, batch_size: int = 16, progress=None) -> list[str]:
    """Seeds and the teacher's sampled continuations, until ``tokens`` new tokens exist.

    The seeds are taken in a shuffled order from ``seed`` (cycling when more text is
    asked for than one pass gives) and continued in left-padded batches with a KV
    cache; sampling draws from a generator seeded by ``seed``, leaving the global
    RNG as it was, so the same seed gives the same text on the same hardware.
    """
    from transformers import GenerationConfig

    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    settings = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=new_tokens,
                                pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    order = torch.randperm(len(seeds), generator=torch.Generator().manual_seed(seed)).tolist()
    texts, made, turn = [], 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while made < tokens:
            batch = [seeds[order[(turn + i) % len(seeds)]] for i in range(batch_size)]
            turn += batch_size
            ids = [tokenizer(text)["input_ids"] for text in batch]
            width = max(map(len, ids))
            input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
            mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=settings)[:, width:].cpu()
            before = made
            for prompt, row in zip(ids, out.tolist()):
                ends = [row.index(t) for t in (tokenizer.eos_token_id, pad) if t in row]
                row = row[: min(ends, default=len(row))][: tokens - made]
                if row:
                    texts.append(tokenizer.decode(prompt + row, skip_special_tokens=True))
                made += len(row)
                if made >= tokens:
                    break
            if made == before:
                raise AnalogError("the teacher ended every continuation at once; generate:N needs a model that writes text")
            if progress is not None:
                progress.update(made - before)
    return texts


def generated_corpus(path: Path, make) -> list[str]:
    """The texts cached at ``path`` (JSONL), made by ``make()`` and written there first when absent."""
    if path.is_file():
        try:
            return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
        except (ValueError, KeyError, TypeError):  # a damaged file is made again, never trusted
            pass
    texts = make()
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    save_atomic(path, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
    return texts


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
        save_atomic(path, lambda tmp: save_file(tensors, tmp))
    return _unpack(tensors)


def save_atomic(path: Path, write) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it to ``path``.

    The temporary name carries the writer's process id, so files left by writers
    that were killed (nothing can clean up after SIGKILL) are removed here, while
    another live process writing the same cache entry keeps its own.
    Not `pytest_analog.atomic.write_atomic`: safetensors writes to a path (the
    targets are never held twice in memory as bytes), and runs sharing a cache
    folder must not sweep each other's live temporaries as `atomic.remove_stale_temps` would.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name.removeprefix(f".{path.name}.").split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _unpack(tensors: dict[str, torch.Tensor]) -> TeacherTargets:
    hidden = {int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith("hidden.")}
    return TeacherTargets(tensors["ids"], tensors["logp"], tensors["rest"], hidden)
