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
import hashlib
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pytest_analog import cache
from pytest_analog.distill import checkpoint, data, losses, release, student
from pytest_analog.distill.config import DistillConfig
from pytest_analog.errors import AnalogError
from pytest_analog.layers import proportional_map
from pytest_analog.models import load_model, resolve_device

WORK = ".distill"  # inside the output folder: checkpoints while training
GENERATION_BATCH = 32  # seeds the teacher continues at once for generate:N


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
    out = Path(out)
    work = out / WORK
    _check_out(out, work)
    run = _start(config)
    setup = _setup(config, run, Path(cache_dir) if cache_dir else None, work, progress)
    trainee = Trainee(setup.model.float(), setup.pairs, setup.teacher_hidden).to(run.accelerator.device)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    before = heldout_divergence(trainee.student, setup.held, setup.held_targets, config, run.accelerator.device)
    state = _resume(config, out, work, trainee, optimizer, before)
    trainee.train()
    wrapped, optimizer = run.accelerator.prepare(trainee, optimizer)
    with _bar(config.max_steps, "distilling (steps)", progress, run.accelerator, initial=state.step) as bar:
        while _training_left(config, state):
            tick = time.perf_counter()
            state.loss = _train_step(config, run, setup, wrapped, optimizer, state)
            state.step += 1
            state.seconds += time.perf_counter() - tick
            _show_step(bar, config, state, tick)
            if state.step % config.eval_every == 0:
                _evaluate(config, run, setup, trainee, state)
            if state.step % config.checkpoint_every == 0 and state.step < config.max_steps:
                _checkpoint(config, run, work, trainee, optimizer, state)
    if state.curve[-1]["step"] != state.step:
        _evaluate(config, run, setup, trainee, state)
    _release(config, out, work, run, setup, trainee, state, before)
    return out


@dataclass
class _Run:
    """Where the run executes: `accelerate`'s handle, the device and the mixed precision."""

    accelerator: Any
    device: str  # as config.device resolved: "cpu", "cuda:0", ...
    mixed: str  # accelerate's mixed_precision: "bf16" or "no"
    started: float  # time.perf_counter() at the start


@dataclass
class _Setup:
    """What training reads once the teacher is gone: the chunks, the teacher's targets and the initial student."""

    tokenizer: Any
    teacher: dict  # the teacher's info (files and their hashes, dtype) for the release
    licence: str | None  # the teacher's licence, which the analog inherits
    teacher_hidden: int  # the teacher's hidden size, the alignment projections' output
    corpus_tokens: int
    train: torch.Tensor  # [n_train, seq_len] token ids
    held: torch.Tensor  # [n_held, seq_len] token ids
    train_targets: data.TeacherTargets
    held_targets: data.TeacherTargets
    shape: student.Shape
    keep: list[int]  # the teacher blocks the student keeps
    model: Any  # the initialised student
    pairs: dict[int, int]  # student layer -> teacher layer aligned to it (empty: no alignment)


@dataclass
class _State:
    """Where training stands: what a checkpoint keeps besides the weights and the optimiser."""

    step: int
    seconds: float  # training time so far, evaluations and checkpoints not counted
    curve: list[dict]  # one point per evaluation: step, seconds, heldout_kl, train_loss
    stale: int  # evaluations since the best one
    best: dict[str, torch.Tensor]  # the student's weights at the lowest held-out KL so far
    loss: float = math.nan  # the last step's training loss


def _start(config: DistillConfig) -> _Run:
    """The accelerator on ``config.device`` (bf16 autocast on a GPU unless told otherwise), the seed set."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    device = resolve_device(config.device)
    cuda = device != "cpu"
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    mixed = "bf16" if config.precision == "bfloat16" or (config.precision == "auto" and cuda) else "no"
    accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed)
    set_seed(config.seed)
    return _Run(accelerator, device, mixed, time.perf_counter())


def _setup(config: DistillConfig, run: _Run, cache_dir: Path | None, work: Path, progress: bool) -> _Setup:
    """Load the teacher, cut the corpus into chunks, plan and initialise the student, cache the teacher's targets."""
    accelerator = run.accelerator
    teacher = load_model(
        config.teacher, device="auto" if run.device != "cpu" and accelerator.num_processes == 1 else str(accelerator.device),
        dtype="auto", trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle, cache_dir=cache_dir,
    )
    licence = release.teacher_licence(teacher.source)
    cache_root = cache_dir or work
    texts = corpus_texts(config, teacher, cache_root, progress, accelerator)
    chunks = data.token_chunks(teacher.tokenizer, texts, config.seq_len)
    train_rows, held_rows = data.split_rows(len(chunks), config.heldout)
    train = chunks[train_rows]
    shape, keep, model = _initial_student(config, teacher, train)
    pairs = align_map(teacher.num_layers, shape.layers) if config.align != "none" else {}
    layers = sorted(set(pairs.values()))
    key = cache.cache_key(
        teacher=teacher.info["sha256"], tokenizer=teacher.info["tokenizer"]["sha256"], chunks=_tensor_hash(chunks),
        temperature=config.temperature, top_k=config.top_k, layers=layers, dtype=teacher.info["dtype"], device=run.device,
    )
    with accelerator.main_process_first(), _bar(chunks.numel(), "teacher targets (tokens)", progress, accelerator) as bar:
        targets = data.teacher_targets(
            teacher.model, chunks, temperature=config.temperature, top_k=config.top_k, layers=layers,
            batch_size=config.batch_size, path=cache_root / "targets" / f"{key}.safetensors", progress=bar,
        )
    return _Setup(  # the teacher itself is dropped here: training reads only its cached targets
        tokenizer=teacher.tokenizer, teacher=teacher.info, licence=licence,
        teacher_hidden=teacher.model.config.get_text_config().hidden_size, corpus_tokens=chunks.numel(),
        train=train, held=chunks[held_rows],
        train_targets=targets.take(train_rows), held_targets=targets.take(held_rows),
        shape=shape, keep=keep, model=model, pairs=pairs,
    )


def _initial_student(config: DistillConfig, teacher, train: torch.Tensor) -> tuple[student.Shape, list[int], Any]:
    """The student's shape at ``config.fraction``, the teacher blocks it keeps, and the model initialised by ``config.init``."""
    shape = student.plan_shape(teacher.model.config, config.fraction, same_head_dim=config.init == "pruned")
    keep = student.kept_blocks(teacher.num_layers, shape.layers, config.keep)
    student_config = student.student_config(teacher.model.config, shape, keep)
    if config.init == "pruned":
        model = student.pruned_student(teacher.model, student_config, keep, train[: config.calibration], config.seed)
    else:
        model = student.random_student(student_config, config.seed)
    return shape, keep, model


def _resume(config: DistillConfig, out: Path, work: Path, trainee: Trainee, optimizer, before: float) -> _State:
    """The state of ``work``'s checkpoint, restored into ``trainee`` and ``optimizer``; a fresh start when there is none.

    Raises:
        AnalogError: the checkpoint was made with other settings.
    """
    meta = checkpoint.load(work / "checkpoints", trainee, optimizer)
    if meta is None:
        meta = {"step": 0, "seconds": 0.0, "curve": [{"step": 0, "seconds": 0.0, "heldout_kl": before}], "stale": 0,
                "best": _weights(trainee.student)}
    if meta.get("config", config.result_dict()) != config.result_dict():
        raise AnalogError(f"{out} holds a checkpoint of other settings; choose another output folder or remove it")
    return _State(meta["step"], meta["seconds"], meta["curve"], meta["stale"], meta["best"])


def _training_left(config: DistillConfig, state: _State) -> bool:
    """Whether another step runs: steps and time are left and patience is not spent."""
    in_time = config.max_seconds is None or state.seconds < config.max_seconds
    return state.step < config.max_steps and in_time and not _patience_spent(config, state)


def _patience_spent(config: DistillConfig, state: _State) -> bool:
    return bool(config.patience) and state.stale >= config.patience


def _train_step(config: DistillConfig, run: _Run, setup: _Setup, wrapped, optimizer, state: _State) -> float:
    """One optimiser step at ``state.step`` over ``batch_size * grad_accum`` chunks; its mean training loss."""
    accelerator = run.accelerator
    done = max(state.step / config.max_steps, state.seconds / config.max_seconds if config.max_seconds else 0.0)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(config, done, state.step)
    rows = batch_rows(state.step, len(setup.train), config.batch_size * config.grad_accum, config.seed)
    micro = rows[accelerator.process_index :: accelerator.num_processes].split(config.batch_size)
    loss_value = 0.0
    for i, part in enumerate(micro):
        with contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(wrapped):
            loss = wrapped(setup.train[part].to(accelerator.device), setup.train_targets.take(part), config)
            accelerator.backward(loss / len(micro))
        loss_value += float(loss.detach()) / len(micro)
    accelerator.clip_grad_norm_(wrapped.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value


def _show_step(bar, config: DistillConfig, state: _State, tick: float) -> None:
    """Advance the progress bar by the step that began at ``tick``: its loss, tokens per second and time left."""
    if bar is None:
        return
    budget = {"budget_left": f"{max(0.0, config.max_seconds - state.seconds):.0f}s"} if config.max_seconds else {}
    tokens_per_second = config.batch_size * config.grad_accum * config.seq_len / (time.perf_counter() - tick)
    bar.set_postfix(loss=f"{state.loss:.3f}", tok_s=f"{tokens_per_second:.0f}", **budget)
    bar.update(1)


def _evaluate(config: DistillConfig, run: _Run, setup: _Setup, trainee: Trainee, state: _State) -> None:
    """Add the held-out KL now to the curve; the weights become the best when it is the lowest so far."""
    kl = heldout_divergence(trainee.student, setup.held, setup.held_targets, config, run.accelerator.device)
    better = kl < min(point["heldout_kl"] for point in state.curve)
    state.curve.append({"step": state.step, "seconds": round(state.seconds, 1), "heldout_kl": kl, "train_loss": state.loss})
    state.stale = 0 if better else state.stale + 1
    if better:
        state.best = _weights(trainee.student)


def _checkpoint(config: DistillConfig, run: _Run, work: Path, trainee: Trainee, optimizer, state: _State) -> None:
    """Save the step reached (weights, optimiser, RNG, best weights, curve) for a resume; the main process writes."""
    if run.accelerator.is_main_process:
        meta = {"config": config.result_dict(), "seconds": state.seconds, "curve": state.curve, "stale": state.stale}
        checkpoint.save(work / "checkpoints", state.step, trainee, optimizer, meta, best=state.best)


def _release(config: DistillConfig, out: Path, work: Path, run: _Run, setup: _Setup, trainee: Trainee, state: _State,
             before: float) -> None:
    """Write the best evaluated weights (never a worse later step) as the release ``out``, then drop the checkpoints."""
    model = trainee.student.eval()
    model.load_state_dict(state.best)
    best_point = min(state.curve, key=lambda point: point["heldout_kl"])
    if run.accelerator.is_main_process:
        release.write(
            out, model, setup.tokenizer, config=config, shape=setup.shape, keep=setup.keep, teacher=setup.teacher,
            licence=setup.licence, staging=work / "release",
            training={
                "steps": state.step, "train_seconds": round(state.seconds, 1),
                "total_seconds": round(time.perf_counter() - run.started, 1),
                "tokens_seen": state.step * config.batch_size * config.grad_accum * config.seq_len,
                "corpus_tokens": setup.corpus_tokens, "train_chunks": len(setup.train), "heldout_chunks": len(setup.held),
                "final_loss": state.loss, "heldout_kl_before": before, "heldout_kl_after": best_point["heldout_kl"],
                "best_step": best_point["step"], "stopped_early": _patience_spent(config, state),
                "curve": state.curve, "align_map": setup.pairs, "device": run.device, "mixed_precision": run.mixed,
            },
        )
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    run.accelerator.wait_for_everyone()


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
    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()
