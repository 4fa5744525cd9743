"""Representation fidelity of a model pair: one capture pass, every metric, one result.

`measure` streams the aligned activations of `capture.capture` into the metric
accumulators and returns a `Measurements`, a plain record that is cached on
disk and read by the built-in suites.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pytest_analog import metrics
from pytest_analog.capture import LAYER_CONVENTION, capture, plan_alignment
from pytest_analog.errors import AnalogError


@dataclass
class Measurements:
    """Every value the representation suites gate on, keyed by teacher layer where per layer."""

    teacher_layers: list[int]  # gated teacher layers
    mapped: dict[int, int]  # teacher layer -> analog layer compared
    cka: dict[int, float]
    rbf_cka: dict[int, float]
    mutual_knn: dict[int, float]
    cka_matrix: list[list[float]]  # every teacher layer x every analog layer, on a token sample
    matrix_rows: int
    best_match: list[int]
    embedding_geometry: float | None
    unembedding_geometry: float | None
    logits: dict[str, float] | None  # None when the tokenizers differ
    capture: dict[str, Any]
    models: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it has no value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurements:
        data = dict(data)
        for key in ("mapped", "cka", "rbf_cka", "mutual_knn"):  # JSON object keys are strings
            data[key] = {int(k): v for k, v in data[key].items()}
        return cls(**data)


def gated_layers(config, num_layers: int) -> list[int]:
    """The teacher layers with one criterion each, checked against the model's depth."""
    wanted = config.layers.teacher
    if wanted == "all":
        return list(range(num_layers + 1))
    if isinstance(wanted, int):  # that many layers, evenly spaced from the embedding output to the last
        return sorted({int(i) for i in np.round(np.linspace(0, num_layers, min(wanted, num_layers + 1)))})
    bad = [i for i in wanted if not 0 <= i <= num_layers]
    if bad:
        raise AnalogError(f"layers.teacher lists {bad}, but the teacher has layers 0..{num_layers} ({LAYER_CONVENTION})")
    return sorted(set(wanted))


def layer_map(config, teacher_layers: list[int], teacher_depth: int, student_depth: int) -> dict[int, int]:
    """The analog layer compared with each gated teacher layer."""
    mapping = config.layers.map
    if mapping == "proportional":
        return {i: round(i * student_depth / teacher_depth) for i in teacher_layers}
    missing = [i for i in teacher_layers if i not in mapping]
    if missing:
        raise AnalogError(f"layers.map has no analog layer for teacher layer(s) {missing}; add them or use 'proportional'")
    bad = {i: j for i, j in mapping.items() if not 0 <= j <= student_depth}
    if bad:
        raise AnalogError(f"layers.map points to analog layers {sorted(set(bad.values()))}, but the analog has layers 0..{student_depth}")
    return {i: mapping[i] for i in teacher_layers}


def measure(pair, prompts, config, *, with_logits: bool = True, progress_factory=None) -> Measurements:
    """Capture both models over ``prompts`` once and compute every representation metric.

    Args:
        pair: a loaded `ModelPair`.
        prompts: a `PromptSet`.
        config: the effective `Config`.
        with_logits: also measure logit fidelity (same tokenizer only); without
            it no model computes its output logits.
        progress_factory: called with (total tokens, description) to make a
            tqdm-like progress bar; None for no progress.
    """

    started = time.perf_counter()
    teacher, student = pair.teacher, pair.student
    layers = gated_layers(config, teacher.num_layers)
    mapped = layer_map(config, layers, teacher.num_layers, student.num_layers)
    plan = plan_alignment(
        teacher.tokenizer, student.tokenizer, prompts.texts,
        same_tokenizer=pair.same_tokenizer, max_length=config.prompts.max_length, skip_first=config.positions.skip_first,
    )
    if plan.n_rows < 4:
        raise AnalogError(f"only {plan.n_rows} aligned positions in the prompt set; give more or longer prompts")

    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(plan.n_rows, size=min(config.layers.matrix_rows, plan.n_rows), replace=False))
    streams = {i: metrics.StreamingLinearCKA() for i in layers}
    logit_stream = metrics.StreamingLogitFidelity() if pair.same_tokenizer and with_logits else None
    t_sample = [[] for _ in range(teacher.num_layers + 1)]
    s_sample = [[] for _ in range(student.num_layers + 1)]
    t_pooled = {i: [] for i in layers}
    s_pooled = {j: [] for j in set(mapped.values())}

    total = sum(len(p.teacher_ids) for p in plan.prompts)
    progress = progress_factory(total, "capturing activations (tokens)") if progress_factory else None
    for batch in capture(pair, plan, batch_size=config.batch_size, with_logits=logit_stream is not None, progress=progress):
        local = sample[(sample >= batch.row_start) & (sample < batch.row_start + batch.n_rows)] - batch.row_start
        local = torch.from_numpy(local)
        for i in layers:
            streams[i].update(batch.teacher(i), batch.student(mapped[i]))
            t_pooled[i].append(batch.teacher_pooled(i).double().cpu())
        for j in s_pooled:
            s_pooled[j].append(batch.student_pooled(j).double().cpu())
        for layer, store in enumerate(t_sample):
            store.append(batch.teacher(layer, local).double().cpu())
        for layer, store in enumerate(s_sample):
            store.append(batch.student(layer, local).double().cpu())
        if logit_stream is not None:
            logit_stream.update(batch.teacher_logits, batch.student_logits, batch.targets)
    if progress is not None:
        progress.close()

    notes = {}
    matrix = metrics.cka_matrix([torch.cat(x) for x in t_sample], [torch.cat(y) for y in s_sample], debiased=True)
    pooled_t = {i: torch.cat(v) for i, v in t_pooled.items()}
    pooled_s = {j: torch.cat(v) for j, v in s_pooled.items()}
    n_seq = len(plan.prompts)
    k = config.criteria.mutual_knn.k
    if n_seq <= k:
        notes["mutual_knn"] = f"needs more than k={k} prompts, got {n_seq}"
    if n_seq < 4:
        notes["rbf_cka"] = f"needs at least 4 prompts, got {n_seq}"
    geometry, geometry_notes = _geometry(pair, config)
    notes.update(geometry_notes)
    if not pair.same_tokenizer:
        notes["logits"] = "the two tokenizers differ; logit fidelity compares next-token distributions over one vocabulary"
    elif not with_logits:
        notes["logits"] = "not measured in this run"

    return Measurements(
        teacher_layers=layers,
        mapped=mapped,
        cka={i: streams[i].compute(debiased=config.criteria.cka.debiased) for i in layers},
        rbf_cka={
            i: float("nan") if "rbf_cka" in notes else metrics.rbf_cka(
                pooled_t[i], pooled_s[mapped[i]], sigma_frac=config.criteria.rbf_cka.sigma_frac
            )
            for i in layers
        },
        mutual_knn={
            i: float("nan") if "mutual_knn" in notes else metrics.mutual_knn(pooled_t[i], pooled_s[mapped[i]], k=k)
            for i in layers
        },
        cka_matrix=np.asarray(matrix).tolist(),
        matrix_rows=len(sample),
        best_match=[int(j) for j in metrics.best_match(np.nan_to_num(matrix, nan=-np.inf))],  # NaN: a constant layer
        embedding_geometry=geometry["embedding"],
        unembedding_geometry=geometry["unembedding"],
        logits=logit_stream.compute() if logit_stream is not None else None,
        capture={
            "alignment": plan.mode,
            "positions": plan.positions,
            "n_prompts": len(plan.prompts),
            "n_prompts_dropped": plan.dropped,
            "n_rows": plan.n_rows,
            "n_tokens": total,
            "seconds": round(time.perf_counter() - started, 3),
        },
        models={"teacher": teacher.info, "student": student.info},
        notes=notes,
    )


def shared_token_ids(teacher_tok, student_tok) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the tokens both vocabularies hold, as (teacher ids, student ids) row-aligned."""
    t_vocab, s_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
    shared = sorted(set(t_vocab) & set(s_vocab))
    return np.asarray([t_vocab[w] for w in shared], dtype=np.int64), np.asarray([s_vocab[w] for w in shared], dtype=np.int64)


def _geometry(pair, config) -> tuple[dict[str, float | None], dict[str, str]]:
    """Embedding and unembedding geometry (Lee et al. 2025) over shared token rows."""

    t_ids, s_ids = shared_token_ids(pair.teacher.tokenizer, pair.student.tokenizer)
    values, notes = {"embedding": None, "unembedding": None}, {}
    for name, getter, crit in (
        ("embedding", "get_input_embeddings", config.criteria.embedding_geometry),
        ("unembedding", "get_output_embeddings", config.criteria.unembedding_geometry),
    ):
        t_mod, s_mod = getattr(pair.teacher.model, getter)(), getattr(pair.student.model, getter)()
        if t_mod is None or s_mod is None:
            notes[f"{name}_geometry"] = f"a model has no {name} matrix"
            continue
        t_w, s_w = t_mod.weight.detach(), s_mod.weight.detach()
        keep = (t_ids < t_w.shape[0]) & (s_ids < s_w.shape[0])
        # rows that are all zero (a padding embedding) have no direction to compare
        keep[keep] &= (t_w[torch.from_numpy(t_ids[keep])].norm(dim=1) > 0).cpu().numpy()
        keep[keep] &= (s_w[torch.from_numpy(s_ids[keep])].norm(dim=1) > 0).cpu().numpy()
        if keep.sum() < 3:
            notes[f"{name}_geometry"] = f"the two vocabularies share {int(keep.sum())} tokens; at least 3 are needed"
            continue
        rng = np.random.default_rng(config.seed)
        rows = np.flatnonzero(keep)
        rows = np.sort(rng.choice(rows, size=min(crit.rows, len(rows)), replace=False))
        t_rows = t_w[torch.from_numpy(t_ids[rows])].double().cpu()
        s_rows = s_w[torch.from_numpy(s_ids[rows])].double().cpu()
        values[name] = metrics.embedding_geometry_pearson(t_rows, s_rows)
    return values, notes
