"""The distillation run: one readable loop from a teacher to a released analog.

`distill` loads the teacher, plans and initialises the student, reads (or has
the teacher write) the corpus, caches the teacher's targets, trains with
`accelerate` (the same code on a CPU, one GPU with bf16 autocast, or several
GPUs under ``accelerate launch``), measures the held-out KL every
``eval_every`` steps and keeps the best weights (stopping early after
``patience`` evaluations without a better one), checkpoints as it goes,
resumes where an interrupted run stopped, and releases the best weights.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pytest_analog import cache
from pytest_analog.distill import checkpoint, data, losses, release, student
from pytest_analog.distill.config import DistillConfig
from pytest_analog.errors import AnalogError
from pytest_analog.layers import proportional_map

WORK = ".distill"  # inside the output folder: checkpoints while training
GENERATION_BATCH = 16  # seeds the teacher continues at once for generate:N


def lr_at(config: DistillConfig, progress: float, step: int) -> float:
    """Learning rate at ``step``: linear warmup, then cosine from ``lr`` to 10 % over ``progress`` in [0, 1]."""
    if step < config.warmup:
        return config.lr * (step + 1) / (config.warmup + 1)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def batch_rows(step: int, n: int, size: int, seed: int) -> torch.Tensor:
    """Chunk indices of ``step``: a fresh permutation of the training chunks per epoch, from ``seed``."""
    positions = torch.arange(step * size, (step + 1) * size)
    epochs = positions // n
    rows = torch.empty(size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        sel = epochs == epoch
        rows[sel] = perm[positions[sel] % n]
    return rows


def align_map(teacher_layers: int, student_layers: int) -> dict[int, int]:
    """Student layer -> teacher layer at the same relative depth (hidden_states indices, 0 = embeddings)."""
    return proportional_map(range(1, student_layers + 1), student_layers, teacher_layers)


class Trainee(torch.nn.Module):
    """The student with its alignment projections: one module for `accelerate` to wrap and checkpoint."""

    def __init__(self, model, pairs: dict[int, int], teacher_hidden: int):
        super().__init__()
        self.student = model
        self.pairs = pairs
        self.projections = torch.nn.ModuleDict(
            {str(j): torch.nn.Linear(model.config.hidden_size, teacher_hidden, bias=False) for j in pairs}
        )

    def forward(self, ids: torch.Tensor, targets: data.TeacherTargets, config: DistillConfig) -> torch.Tensor:
        """The training loss of chunks ``ids`` [b, seq] against the teacher's cached targets."""
        device = ids.device
        output = self.student(input_ids=ids, output_hidden_states=bool(self.pairs))
        log_q = losses.student_buckets(output.logits.flatten(0, 1), targets.ids.flatten(0, 1).to(device), config.temperature)
        log_p = losses.teacher_buckets(targets.logp.flatten(0, 1).to(device), targets.rest.flatten().to(device))
        loss = losses.divergence(config.loss, log_p, log_q, temperature=config.temperature, beta=config.beta)
        if config.ce_weight:
            loss = loss + config.ce_weight * F.cross_entropy(output.logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        if self.pairs:
            # position 0 is the attention sink, whose massive activations would decide the loss by themselves
            terms = [
                losses.alignment(self.projections[str(j)](output.hidden_states[j][:, 1:]),
                                 targets.hidden[i][:, 1:].to(device), config.align)
                for j, i in self.pairs.items()
            ]
            loss = loss + config.align_weight * torch.stack(terms).mean()
        return loss


def distill(config: DistillConfig, out: str | Path, *, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Distil an analog of ``config.teacher`` into ``out``: a release folder (see `release`).

    Resumes from ``out``'s checkpoint when one of the same settings exists.
    ``cache_dir`` keeps the teacher's targets for later runs (default: inside ``out``).

    Raises:
        AnalogError: a bad setting, teacher, corpus or output folder, with a one-line reason.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from pytest_analog.models import load_model, resolve_device

    out = Path(out)
    work = out / WORK
    _check_out(out, work)
    device = resolve_device(config.device)
    cuda = device != "cpu"
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    mixed = "bf16" if config.precision == "bfloat16" or (config.precision == "auto" and cuda) else "no"
    accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed)
    set_seed(config.seed)
    started = time.perf_counter()

    teacher = load_model(
        config.teacher, device="auto" if cuda and accelerator.num_processes == 1 else str(accelerator.device),
        dtype="auto", trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle,
        cache_dir=Path(cache_dir) if cache_dir else None,
    )
    tokenizer, teacher_info, teacher_config = teacher.tokenizer, teacher.info, teacher.model.config
    licence = release.teacher_licence(teacher.source)  # the analog inherits it
    cache_root = Path(cache_dir) if cache_dir else work
    chunks = data.token_chunks(tokenizer, corpus_texts(config, teacher, cache_root, progress, accelerator), config.seq_len)
    train_rows, held_rows = data.split_rows(len(chunks), config.heldout)
    train, held = chunks[train_rows], chunks[held_rows]

    shape = student.plan_shape(teacher_config, config.fraction, same_head_dim=config.init == "pruned")
    keep = student.kept_blocks(teacher.num_layers, shape.layers, config.keep)
    student_config = student.student_config(teacher_config, shape, keep)
    if config.init == "pruned":
        model = student.pruned_student(teacher.model, student_config, keep, train[: config.calibration], config.seed)
    else:
        model = student.random_student(student_config, config.seed)
    pairs = align_map(teacher.num_layers, shape.layers) if config.align != "none" else {}
    layers = sorted(set(pairs.values()))

    key = cache.cache_key(
        teacher=teacher_info["sha256"], tokenizer=teacher_info["tokenizer"]["sha256"], chunks=_tensor_hash(chunks),
        temperature=config.temperature, top_k=config.top_k, layers=layers, dtype=teacher_info["dtype"], device=device,
    )
    targets_path = cache_root / "targets" / f"{key}.safetensors"
    with accelerator.main_process_first(), _bar(chunks.numel(), "teacher targets (tokens)", progress, accelerator) as bar:
        targets = data.teacher_targets(
            teacher.model, chunks, temperature=config.temperature, top_k=config.top_k, layers=layers,
            batch_size=config.batch_size, path=targets_path, progress=bar,
        )
    del teacher  # training reads only the cached targets
    train_t, held_t = targets.take(train_rows), targets.take(held_rows)

    trainee = Trainee(model.float(), pairs, teacher_config.get_text_config().hidden_size).to(accelerator.device)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    before = heldout_divergence(trainee.student, held, held_t, config, accelerator.device)
    meta = checkpoint.load(work / "checkpoints", trainee, optimizer)
    if meta is None:
        meta = {"step": 0, "seconds": 0.0, "curve": [{"step": 0, "seconds": 0.0, "heldout_kl": before}], "stale": 0,
                "best": _weights(trainee.student)}
    if meta.get("config", config.result_dict()) != config.result_dict():
        raise AnalogError(f"{out} holds a checkpoint of other settings; choose another output folder or remove it")
    trainee.train()
    wrapped, optimizer = accelerator.prepare(trainee, optimizer)

    step, trained, curve, stale, best = meta["step"], meta["seconds"], meta["curve"], meta["stale"], meta["best"]

    def evaluate() -> None:
        """Held-out KL now; the weights become the best when it is the lowest so far."""
        nonlocal stale, best
        kl = heldout_divergence(trainee.student, held, held_t, config, accelerator.device)
        better = kl < min(point["heldout_kl"] for point in curve)
        curve.append({"step": step, "seconds": round(trained, 1), "heldout_kl": kl, "train_loss": loss_value})
        stale = 0 if better else stale + 1
        if better:
            best = _weights(trainee.student)

    def patience_spent() -> bool:
        return bool(config.patience) and stale >= config.patience

    per_step = config.batch_size * config.grad_accum
    tokens_per_step = per_step * config.seq_len
    loss_value = float("nan")
    with _bar(config.max_steps, "distilling (steps)", progress, accelerator, initial=step) as bar:
        while step < config.max_steps and (config.max_seconds is None or trained < config.max_seconds) and not patience_spent():
            tick = time.perf_counter()
            done = max(step / config.max_steps, trained / config.max_seconds if config.max_seconds else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, done, step)
            rows = batch_rows(step, len(train), per_step, config.seed)[accelerator.process_index :: accelerator.num_processes]
            micro = rows.split(config.batch_size)
            loss_value = 0.0
            for i, part in enumerate(micro):
                with contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(wrapped):
                    loss = wrapped(train[part].to(accelerator.device), train_t.take(part), config)
                    accelerator.backward(loss / len(micro))
                loss_value += float(loss.detach()) / len(micro)
            accelerator.clip_grad_norm_(wrapped.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            trained += time.perf_counter() - tick
            if bar is not None:
                budget = {"budget_left": f"{max(0.0, config.max_seconds - trained):.0f}s"} if config.max_seconds else {}
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_step / (time.perf_counter() - tick):.0f}", **budget)
                bar.update(1)
            if step % config.eval_every == 0:
                evaluate()
            if step % config.checkpoint_every == 0 and step < config.max_steps and accelerator.is_main_process:
                checkpoint.save(work / "checkpoints", step, trainee, optimizer,
                                {"config": config.result_dict(), "seconds": trained, "curve": curve, "stale": stale},
                                best=best)
    if curve[-1]["step"] != step:
        evaluate()

    model = trainee.student.eval()
    model.load_state_dict(best)  # the release is the best evaluated step, never a worse later one
    best_point = min(curve, key=lambda point: point["heldout_kl"])
    if accelerator.is_main_process:
        release.write(
            out, model, tokenizer, config=config, shape=shape, keep=keep, teacher=teacher_info,
            licence=licence, staging=work / "release",
            training={
                "steps": step, "train_seconds": round(trained, 1), "total_seconds": round(time.perf_counter() - started, 1),
                "tokens_seen": step * tokens_per_step, "corpus_tokens": chunks.numel(), "train_chunks": len(train),
                "heldout_chunks": len(held), "final_loss": loss_value, "heldout_kl_before": before,
                "heldout_kl_after": best_point["heldout_kl"], "best_step": best_point["step"],
                "stopped_early": patience_spent(),
                "curve": curve, "align_map": pairs, "device": device, "mixed_precision": mixed,
            },
        )
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    return out


@torch.no_grad()
def heldout_divergence(model, chunks: torch.Tensor, targets: data.TeacherTargets, config, device) -> float:
    """Mean KL(teacher ‖ student) per token on held-out chunks, over the cached top-k buckets at the training
    temperature (a lower bound on the full-vocabulary KL; equal to it when top_k covers the vocabulary)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for rows in torch.arange(len(chunks)).split(config.batch_size):
        logits = model(input_ids=chunks[rows].to(device)).logits
        t = targets.take(rows)
        log_q = losses.student_buckets(logits.flatten(0, 1), t.ids.flatten(0, 1).to(device), config.temperature)
        log_p = losses.teacher_buckets(t.logp.flatten(0, 1).to(device), t.rest.flatten().to(device))
        total += float(losses.kl(log_p, log_q)) * log_p.shape[0]
        count += log_p.shape[0]
    model.train(was_training)
    return total / count


def corpus_texts(config: DistillConfig, teacher, folder: Path, progress: bool, accelerator) -> list[str]:
    """The documents of ``config.corpus``; for ``generate:N``, the teacher's own text, cached in ``folder / "corpus"``
    by the teacher's file hashes and the generation settings, after those of ``config.mix``."""
    count = config.generated_tokens
    if count is None:
        return data.read_texts(config.corpus)
    seeds = data.seed_texts()
    key = cache.cache_key(
        teacher=teacher.info["sha256"], tokenizer=teacher.info["tokenizer"]["sha256"], seeds=seeds, tokens=count,
        temperature=config.gen_temperature, top_p=config.gen_top_p, new_tokens=config.gen_tokens, seed=config.seed,
        batch=GENERATION_BATCH, dtype=teacher.info["dtype"], device=str(teacher.model.device),
    )

    def make() -> list[str]:
        with _bar(count, "teacher writing the corpus", progress, accelerator, unit="tok") as bar:
            return data.generate_texts(
                teacher.model, teacher.tokenizer, seeds, count, temperature=config.gen_temperature,
                top_p=config.gen_top_p, new_tokens=config.gen_tokens, seed=config.seed, batch_size=GENERATION_BATCH,
                progress=bar,
            )

    with accelerator.main_process_first():
        generated = data.generated_corpus(folder / "corpus" / f"{key}.jsonl", make)
    return (data.read_texts(config.mix) if config.mix != "none" else []) + generated


def _weights(model) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s weights (each tensor its own storage, tied ones included)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _tensor_hash(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def _check_out(out: Path, work: Path) -> None:
    if out.is_file():
        raise AnalogError(f"output {out} is a file; give a folder for the analog")
    if out.is_dir() and any(p.name != WORK for p in out.iterdir()) and checkpoint.peek(work / "checkpoints") is None:
        raise AnalogError(f"output folder {out} is not empty and holds no checkpoint to resume; choose a new folder")


@contextlib.contextmanager
def _bar(total: int, desc: str, show: bool, accelerator, initial: int = 0, unit: str = "it"):
    if not show or not accelerator.is_main_process:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()
