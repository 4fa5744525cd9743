"""Representation fidelity of a model pair: one capture pass, every metric, one result.

This is the run's analog half: `measure` streams the analog's (and the chance
control's) aligned activations from `capture.capture` into the metric
accumulators beside the teacher's rows, read from the teacher's `Part`
(`suites.representation.teacher`, built live or read from a teacher
reference), and returns a `Measurements`, a plain record that is cached on
disk and read by the built-in suites.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pytest_analog import metrics
from pytest_analog.capture import capture, next_token_rows, plan_alignment
from pytest_analog.controls import control_models
from pytest_analog.criterion import Measured, chance_corrected
from pytest_analog.errors import AnalogError
from pytest_analog.layers import gated_layers, layer_map
from pytest_analog.massive import TopRows
from pytest_analog.metrics import permutation
from pytest_analog.progress import progress_bar
from pytest_analog.suites.representation.teacher import EMBEDDINGS, TeacherRows, usable_rows


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
    control: dict[str, Any] | None = None  # the chance control's record; None without one
    chance: dict[str, Any] = field(default_factory=dict)  # metric -> {teacher layer: value}, or a value (geometry)
    chance_matrix: list[list[float]] | None = None  # teacher x control layers, on the matrix sample
    intervals: dict[str, dict[int, dict[str, list[float]]]] = field(default_factory=dict)
    # metric -> teacher layer -> {"value", "chance", "corrected"}: bootstrap intervals over prompts
    massive: dict[str, Any] = field(default_factory=dict)  # massive-activation rows and the influence figure
    chance_seeds: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # metric -> layer -> per control seed
    # the permutation null (`metrics.permutation`): settings, and metric or "best_match" / "best_block" -> teacher
    # layer -> {"value", "threshold", "p_value", "calibrated", "permutations"} (best ones also "layer")
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurements:
        data = dict(data)
        for key in ("mapped", "cka", "rbf_cka", "mutual_knn"):  # JSON object keys are strings
            data[key] = {int(k): v for k, v in data[key].items()}
        data["chance"] = {m: _int_keys(v) for m, v in data.get("chance", {}).items()}
        data["intervals"] = {m: _int_keys(v) for m, v in data.get("intervals", {}).items()}
        data["massive"] = {k: _int_keys(v) for k, v in data.get("massive", {}).items()}
        data["chance_seeds"] = {m: _int_keys(v) for m, v in data.get("chance_seeds", {}).items()}
        data["calibration"] = {m: _int_keys(v) for m, v in data.get("calibration", {}).items()}
        return cls(**data)

    def measured(self, metric: str, teacher_layer: int | None = None) -> Measured:
        """One value with its chance level, intervals and the reason it may lack (a per-layer metric
        at ``teacher_layer``; the geometry metrics without one)."""
        value, chance = getattr(self, metric), self.chance.get(metric)
        bounds = {}
        if teacher_layer is not None:
            value, chance = value[teacher_layer], (chance or {}).get(teacher_layer)
            bounds = self.intervals.get(metric, {}).get(teacher_layer, {})
        return Measured(
            value, bounds.get("value"), chance, bounds.get("chance"), bounds.get("corrected"), self.notes.get(metric)
        )

    def calibrated(self, metric: str, teacher_layer: int) -> dict[str, Any] | None:
        """The permutation null's record of ``metric`` (or "best_match", "best_block") at ``teacher_layer``;
        None where it was not computed."""
        return self.calibration.get(metric, {}).get(teacher_layer)


PER_LAYER = ("cka", "rbf_cka", "mutual_knn")
STREAM_ROWS = 1024  # rows gathered from several batches before the CKA streams take them: fewer, larger products
# the streams' per-batch XᵀX, XᵀY, YᵀY, summed in float64: the values move by about 1e-8 from all-float64, and
# by up to 5e-6 at layers where two massive rows hold half the squared norm (the demo pair, teacher layers 15-22)
STREAM_PRODUCTS = torch.float32


def _int_keys(value):
    return {int(k): v for k, v in value.items()} if isinstance(value, dict) else value


def run(pair, part, config, *, prompts, with_logits: bool) -> dict:
    """The analog half of the representation run: `measure` with the configured chance controls, as JSON."""
    chance = config.chance
    control = None if chance.control == "none" else control_models(pair.analog, chance.control, chance.seed, chance.seeds)
    measured = measure(pair, part, prompts, config, control=control, with_logits=with_logits, progress_factory=progress_bar)
    measured.capture.update(prompt_set=prompts.name, prompt_set_sha256=prompts.sha256)
    return measured.to_dict()


def measure(pair, part, prompts, config, *, control=None, with_logits: bool = True, progress_factory=None) -> Measurements:
    """Capture the analog over ``prompts`` once and compute every representation metric against the teacher's
    side, read from ``part`` (`suites.representation.teacher.teacher_part`).

    Args:
        pair: a `ModelPair`; only the analog runs. The teacher's ``tokenizer``, ``info`` and ``num_layers`` are
            read, never its model (which is None for a teacher read from a reference).
        part: the teacher's `Part` of the representation run, built over ``prompts`` with ``config``.
        prompts: a `PromptSet`.
        config: the effective `Config`.
        control: the chance control (`controls.control_model`) or a list of them,
            one per seed (`controls.control_models`), read in the same pass;
            every representation metric is also computed between the teacher
            and each, the chance level is their mean. The first also gives
            the layer matrix's chance and the bootstrap replicates; the
            others their full-data values. None: no chance levels.
        with_logits: also measure logit fidelity (same tokenizer only); without
            it the analog computes no output logits.
        progress_factory: called with (total tokens, description) to make a
            tqdm-like progress bar; None for no progress.

    Raises:
        AnalogError: (one line) too few aligned positions, or a part that does not match the prompts, the gated
            layers or the tokenization here.
    """
    started = time.perf_counter()
    teacher, analog = pair.teacher, pair.analog
    controls = [] if control is None else list(control) if isinstance(control, (list, tuple)) else [control]
    layers = gated_layers(config, teacher.num_layers)
    mapped = layer_map(config, layers, teacher.num_layers, analog.num_layers)
    plan = plan_alignment(
        teacher.tokenizer, analog.tokenizer, prompts.texts,
        same_tokenizer=pair.same_tokenizer, max_length=config.prompts.max_length, skip_first=config.positions.skip_first,
    )
    if plan.n_rows < 4:
        raise AnalogError(f"only {plan.n_rows} aligned positions in the prompt set; give more or longer prompts")
    rows = TeacherRows(part, plan, len(prompts.texts), layers)
    stream = _Stream(pair, plan, rows, config, layers, mapped, controls=len(controls), with_logits=with_logits)
    total = sum(len(p.analog_ids) for p in plan.prompts)
    progress = progress_factory(total, "capturing activations (tokens)") if progress_factory else None
    for batch in capture(pair, plan, batch_size=config.batch_size, with_logits=stream.logits is not None,
                         progress=progress, control=controls, teacher=False):
        stream.add(batch)
    if progress is not None:
        progress.close()
    return _measurements(stream.finish(), pair, part, config, controls, with_logits, started)


class _Stream:
    """What one capture pass feeds: the CKA streams over every row, the layer matrix's row sample, the pooled
    rows, the bootstrap's row sample and the massive-row candidates. The teacher's rows are read from its part
    (`TeacherRows`) for the rows each batch compares. Rows stay as captured (dtype, device) until `finish`,
    which moves each kind to the CPU once."""

    def __init__(self, pair, plan, teacher, config, layers, mapped, *, controls: int, with_logits: bool):
        self.plan, self.teacher, self.layers, self.mapped = plan, teacher, layers, mapped
        self.others = ("analog",) if not controls else ("analog", "control")  # each compared with the teacher
        # further control seeds: only their CKA streams and pooled rows (full-data values, no matrix or bootstrap)
        self.extra = tuple(f"control:{s}" for s in range(1, controls))
        self.controls = ("control", *self.extra) if controls else ()
        self.matrix_rows = teacher.part.tensors["matrix.rows"].numpy()  # the part's kept rows in the matrix sample
        rng = np.random.default_rng(config.seed)
        self.boot = (np.sort(rng.choice(plan.n_rows, size=min(config.chance.rows, plan.n_rows), replace=False))
                     if config.chance.resamples > 0 else None)
        self.streams = {(name, i): metrics.StreamingLinearCKA(products=STREAM_PRODUCTS)
                        for name in (*self.others, *self.extra) for i in layers}
        self.pending = []  # batches' rows (dicts like `read` in `add`) the streams have not taken yet
        self.logits = metrics.StreamingTopKLogitFidelity() if pair.same_tokenizer and with_logits else None
        depth = {"teacher": pair.teacher.num_layers, **dict.fromkeys(self.others, pair.analog.num_layers)}
        self.samples = {name: [[] for _ in range(depth[name] + 1)] for name in ("teacher", *self.others)}
        self.sample = []  # capture-order rows in the matrix sample
        self.read = [("teacher", i) for i in layers] + [(n, j) for n in (*self.others, *self.extra)
                                                        for j in sorted(set(mapped.values()))]
        self.pooled = {key: [] for key in self.read}
        self.boot_rows = {key: [] for key in self.read if key[0] not in self.extra}
        self.boot_prompts, self.order = [], []
        self.top = TopRows(layers, plan.n_rows)

    def add(self, batch) -> None:
        """Stream one captured batch into every accumulator."""
        prompts = [self.plan.prompts[k] for k in batch.prompts]
        stored = np.concatenate([self.teacher.rows(p, p.teacher_rows) for p in prompts])  # the part's rows

        def teacher(layer, rows=None):
            return self.teacher.hidden(layer, stored if rows is None else stored[rows]).to(batch.device)

        pool = [self.teacher.rows(p, p.teacher_pool) for p in prompts]
        pool_rows, sizes = np.concatenate(pool), torch.tensor([len(rows) for rows in pool], dtype=torch.float64)
        owner = torch.repeat_interleave(torch.arange(len(prompts)), sizes.long())

        def teacher_pooled(layer):  # each prompt's mean over its pooled positions
            h = self.teacher.hidden(layer, pool_rows).double()
            return torch.zeros(len(prompts), h.shape[1], dtype=torch.float64).index_add_(0, owner, h) / sizes[:, None]

        get = {"teacher": teacher, "analog": batch.analog}
        pooled = {"teacher": teacher_pooled, "analog": batch.analog_pooled}
        for which, name in enumerate(self.controls):
            get[name] = functools.partial(batch.control, which=which)
            pooled[name] = functools.partial(batch.control_pooled, which=which)
        read = {key: get[key[0]](key[1]) for key in self.read}  # every row of the layers the metrics read, gathered once
        norms = {i: read["teacher", i].norm(dim=1).double().cpu().numpy() for i in self.layers}
        self.pending.append(read)
        if sum(len(r["teacher", self.layers[0]]) for r in self.pending) >= STREAM_ROWS:
            self._update_streams()
        self.top.update(batch.row_start, norms, lambda rows: {key: v[rows] for key, v in read.items()})
        for (name, layer), store in self.pooled.items():
            store.append(pooled[name](layer))
        local = np.flatnonzero(np.isin(stored, self.matrix_rows))
        self.sample.append(batch.row_start + local)
        in_sample = np.searchsorted(self.matrix_rows, stored[local])
        for name, stores in self.samples.items():
            for layer, store in enumerate(stores):
                store.append(self.teacher.matrix(layer, in_sample) if name == "teacher" else get[name](layer, torch.from_numpy(local)))
        self.order.extend(batch.prompts)
        if self.boot is not None:
            rows = _local(self.boot, batch)
            row_prompt = np.repeat(batch.prompts, [len(p.teacher_rows) for p in prompts])
            self.boot_prompts.append(row_prompt[rows])
            for key, store in self.boot_rows.items():
                store.append(read[key][torch.from_numpy(rows)])
        if self.logits is not None:
            nexts = np.concatenate([self.teacher.logit_rows(p, next_token_rows(p)) for p in prompts])
            vocab = self.teacher.part.meta["vocab"]
            analog = batch.analog_logits[:, :vocab]  # an analog with fewer outputs gives the rest no mass
            analog = torch.nn.functional.pad(analog, (0, vocab - analog.shape[1]), value=-math.inf)
            self.logits.update(self.teacher.top_k(nexts), analog, batch.targets)

    def _update_streams(self) -> None:
        """Stream the pending rows into the CKA streams, one update per teacher layer."""
        rows = {key: torch.cat([r[key] for r in self.pending]) for key in self.pending[0]}
        self.pending = []
        for i in self.layers:
            names = (*self.others, *self.extra)
            metrics.StreamingLinearCKA.update_each([self.streams[name, i] for name in names], rows["teacher", i],
                                                   [rows[name, self.mapped[i]] for name in names])

    def finish(self) -> _Stream:
        """Take the last pending rows; concatenate the collected rows on the CPU: the matrix sample as captured,
        the others as float64."""
        if self.pending:
            self._update_streams()

        def joined(parts):
            return torch.cat(parts).double().cpu()

        self.pooled = {key: joined(v) for key, v in self.pooled.items()}
        self.sample = np.concatenate([np.zeros(0, dtype=np.int64), *self.sample])
        # the matrix sample as captured: `cka_matrix` widens each layer in its turn
        self.samples = {name: [torch.cat(v).cpu() for v in stores] for name, stores in self.samples.items()}
        if self.boot is not None:  # no bootstrap: no rows were collected for it
            self.boot_rows = {key: joined(v) for key, v in self.boot_rows.items()}
        return self


def _measurements(stream, pair, part, config, controls, with_logits: bool, started: float) -> Measurements:
    """Every value after the pass: massive rows left out, the per-layer metrics, the chance levels, the intervals,
    the permutation null."""
    plan, layers, mapped, others = stream.plan, stream.layers, stream.mapped, stream.others
    found = stream.top.finish(config.positions.massive_multiple, exclude=config.positions.massive == "exclude")
    influence = _leave_out(stream.streams, stream.top, found, mapped, debiased=config.representation.cka.debiased,
                           influenced=others)
    kept = _left_in(stream.sample, found)
    matrices = _layer_matrices(stream.samples, others, kept)
    vocab = pair.analog.tokenizer.get_vocab()  # the control's too: it has the analog's tokenizer
    geometry, geometry_notes = _geometry(part, pair.analog, vocab, config)
    notes = _notes(pair, config, len(plan.prompts), with_logits, geometry_notes)
    values = _per_layer(stream, "analog", config, notes)
    chance, seeds, intervals, chance_matrix = {}, {}, {}, None
    if controls:
        per_seed = [_per_layer(stream, name, config, notes) for name in stream.controls]
        seeds = {metric: {i: [v[metric][i] for v in per_seed] for i in layers} for metric in PER_LAYER}
        chance = {metric: {i: float(np.mean(v)) for i, v in by_layer.items()} for metric, by_layer in seeds.items()}
        control_geometry, _ = _geometry(part, controls[0], vocab, config)  # gated raw: the first seed's is reported
        chance.update({f"{name}_geometry": v for name, v in control_geometry.items()})
        chance_matrix = _gated_cells(matrices["control"], mapped, chance["cka"]).tolist()
    if stream.boot is not None:
        left_in = _left_in(stream.boot, found)
        row_prompt = np.repeat(stream.order, [len(plan.prompts[k].teacher_rows) for k in stream.order]).astype(np.int64)
        kept_rows = row_prompt[_left_in(np.arange(len(row_prompt)), found)]
        intervals = _intervals(
            config, layers, mapped, others, values, chance, seeds, notes,
            groups=np.concatenate(stream.boot_prompts)[left_in], order=np.asarray(stream.order),
            n_prompts=len(plan.prompts), rows={key: v[left_in] for key, v in stream.boot_rows.items()},
            pooled=stream.pooled, share=metrics.same_group_share(np.bincount(kept_rows, minlength=len(plan.prompts))),
        )
    matrix = _gated_cells(matrices["analog"], mapped, values["cka"])
    massive = _massive_record(found, stream.top, plan, stream.order, pair.teacher.tokenizer,
                              config.positions.massive_multiple)
    massive["influence"] = {i: _influence(i, stream.top.m, values, seeds, influence) for i in layers}
    return Measurements(
        teacher_layers=layers,
        mapped=mapped,
        **values,
        cka_matrix=matrix.tolist(),
        matrix_rows=int(kept.sum()),
        best_match=[int(j) for j in metrics.best_match(np.nan_to_num(matrix, nan=-np.inf))],  # NaN: a constant layer
        embedding_geometry=geometry["embedding"],
        unembedding_geometry=geometry["unembedding"],
        logits=stream.logits.compute() if stream.logits is not None else None,
        capture={
            "alignment": plan.mode,
            "positions": plan.positions,
            "n_prompts": len(plan.prompts),
            "n_prompts_dropped": plan.dropped,
            "n_rows": plan.n_rows,
            "n_rows_left_out": len(found.rows) if found.excluded else 0,
            "n_tokens": sum(len(p.teacher_ids) for p in plan.prompts),
            "logits_top_k": part.meta["top_k"] if stream.logits is not None else None,
            "seconds": round(time.perf_counter() - started, 3),
        },
        models={"teacher": pair.teacher.info, "analog": pair.analog.info},
        notes=notes,
        control={**controls[0].info, "seeds": [c.info["seed"] for c in controls]} if controls else None,
        chance=chance,
        chance_matrix=chance_matrix,
        intervals=intervals,
        massive=massive,
        chance_seeds=seeds,
        calibration=_calibration(stream, found, config, notes) if config.chance.permutations else {},
    )


def _layer_matrices(samples, others, kept) -> dict[str, np.ndarray]:
    """Every teacher layer against every layer of each of ``others``, on the matrix sample's kept rows;
    one `cka_matrix` call, so each teacher layer's Gram matrix is built once (multiplied in float32: the
    sampled cells move by about 1e-6; the gated cells are replaced by the values on every row)."""
    columns = [y[kept] for name in others for y in samples[name]]
    both = metrics.cka_matrix([x[kept] for x in samples["teacher"]], columns, debiased=True, dtype=torch.float32)
    return dict(zip(others, np.split(both, len(others), axis=1)))


def _left_in(rows: np.ndarray, found) -> np.ndarray:
    """Which of ``rows`` (capture order) the token-level metrics keep: all but the left-out massive rows."""
    return ~np.isin(rows, found.rows) if found.excluded else np.ones(len(rows), dtype=bool)


def _notes(pair, config, n_prompts: int, with_logits: bool, geometry_notes) -> dict[str, str]:
    """Why a metric has no value in this run, by metric (``geometry_notes`` from `_geometry`)."""
    notes = {}
    k = config.representation.mutual_knn.k
    if n_prompts <= k:
        notes["mutual_knn"] = f"needs more than k={k} prompts, got {n_prompts}"
    if n_prompts < 4:
        notes["rbf_cka"] = f"needs at least 4 prompts, got {n_prompts}"
    notes.update(geometry_notes)
    if not pair.same_tokenizer:
        notes["logits"] = "the two tokenizers differ; logit fidelity compares next-token distributions over one vocabulary"
    elif not with_logits:
        notes["logits"] = "not measured in this run"
    return notes


def _per_layer(stream, name: str, config, notes) -> dict[str, dict[int, float]]:
    """The per-layer metrics between the teacher and ``name`` (the analog or the control), by teacher layer."""
    settings, layers = config.representation, stream.layers
    teacher = {i: stream.pooled["teacher", i] for i in layers}
    other = {i: stream.pooled[name, stream.mapped[i]] for i in layers}
    return {
        "cka": {i: stream.streams[name, i].compute(debiased=settings.cka.debiased) for i in layers},
        "rbf_cka": {
            i: float("nan") if "rbf_cka" in notes
            else metrics.rbf_cka(teacher[i], other[i], sigma_frac=settings.rbf_cka.sigma_frac, debiased=settings.rbf_cka.debiased)
            for i in layers
        },
        "mutual_knn": {
            i: float("nan") if "mutual_knn" in notes else metrics.mutual_knn(teacher[i], other[i], k=settings.mutual_knn.k)
            for i in layers
        },
    }


def _gated_cells(matrix, mapped, gated) -> np.ndarray:
    """The layer matrix with each gated cell (teacher layer, its mapped analog layer) set to the gated value,
    which is computed on every kept row rather than the matrix's sample."""
    matrix = np.array(matrix, dtype=np.float64)
    for i, j in mapped.items():
        matrix[i, j] = gated[i]
    return matrix


def _influence(i, m, values, seeds, without) -> dict[str, Any]:
    """How far the gated CKA at teacher layer i moves when its m rows of largest teacher norm are left out
    (the corrected score against the first control seed, the one whose rows are at hand)."""
    record = {"rows": m, "value": without["analog", i], "shift": without["analog", i] - values["cka"][i]}
    if ("control", i) in without:
        corrected = chance_corrected(values["cka"][i], seeds["cka"][i][0])
        record["corrected"] = chance_corrected(without["analog", i], without["control", i])
        record["corrected_shift"] = record["corrected"] - corrected
    return record


def _leave_out(streams, top, found, mapped, *, debiased: bool, influenced=None) -> dict[tuple[str, int], float]:
    """Remove the left-out massive rows from every CKA stream; return the value of each stream of ``influenced``
    (names; the run passes the analog and the first control, None: every stream) without, in addition, its
    layer's influence rows (the top 0.1 % of the rows kept, by teacher norm)."""

    def rows_of(rows, name, i):
        return top.stacked(rows, ("teacher", i)), top.stacked(rows, (name, mapped[i]))

    without = {}
    for (name, i), stream in streams.items():
        if found.excluded and len(found.rows):
            stream.remove(*rows_of(found.rows, name, i))
        if influenced is not None and name not in influenced:
            continue
        moved = copy.deepcopy(stream).remove(*rows_of(found.influence[i], name, i))
        without[name, i] = moved.compute(debiased=debiased) if moved.n >= 4 else float("nan")
    return without


def _massive_record(found, top, plan, order, teacher_tokenizer, multiple) -> dict[str, Any]:
    """What the report lists about massive-activation rows: the rule, and each row with its token and layers."""
    row_prompt = np.repeat(order, [len(plan.prompts[k].teacher_rows) for k in order])
    row_position = np.concatenate([plan.prompts[k].teacher_rows for k in order]) if order else np.zeros(0, int)
    listed = []
    for r in found.rows.tolist():
        prompt = plan.prompts[int(row_prompt[r])]
        position = int(row_position[r])
        listed.append({
            "row": r,
            "prompt": int(row_prompt[r]),
            "position": position,
            "token": teacher_tokenizer.convert_ids_to_tokens(int(prompt.teacher_ids[position])),
            "layers": [i for i in found.massive if r in found.massive[i]],
            "norm_ratio": {i: round(float(top.norms[i][r] / found.medians[i]), 2) for i in found.massive
                           if r in found.massive[i]},
        })
    return {
        "rule": f"teacher row norm > {multiple:g} x the layer's median row norm, at any gated layer",
        "multiple": multiple,
        "excluded": found.excluded,
        "note": found.note,
        "by_layer": {i: len(rows) for i, rows in found.massive.items()},
        "median_norm": found.medians,
        "rows": listed,
    }


def _local(rows: np.ndarray, batch) -> np.ndarray:
    """The entries of ``rows`` (capture-order row indices) inside ``batch``, relative to its first row."""
    return rows[(rows >= batch.row_start) & (rows < batch.row_start + batch.n_rows)] - batch.row_start


def _intervals(config, layers, mapped, others, values, chance, seeds, notes, *, groups, order, n_prompts, rows, pooled,
               share):
    """Bootstrap intervals over prompts of each per-layer value and, with a control, its chance level and corrected score.

    The replicates are over `metrics.interval_counts` (bootstrap draws, then the cluster jackknife) and each
    interval is `metrics.bias_corrected_interval` / `metrics.corrected_interval`: token-level CKA over prompts
    is biased upward by the share of same-prompt pairs (``share``: that of every kept row, the estimate's
    data; the replicates use the token sample ``chance.rows``, Gram matrices multiplied in float32). The
    analog and the control are resampled with the same prompt draws, so the corrected score's interval
    carries both and their correlation. The chance level is the mean over control seeds (``seeds``: metric
    -> layer -> the value of each): the first seed's replicates carry the variation over prompts, and each
    bootstrap replicate trades that seed's value for the mean of the seeds drawn with replacement (the
    jackknife entries for the mean of all), which carries the seed-to-seed spread.
    """
    c = config.chance
    counts = metrics.interval_counts(n_prompts, c.resamples, c.seed)
    pooled_counts = counts[:, order]  # pooled rows are in capture order
    sizes = {"cka": np.bincount(groups, minlength=n_prompts), "rbf_cka": None, "mutual_knn": None}
    shares = {"cka": share, "rbf_cka": None, "mutual_knn": None}
    settings = config.representation
    pairs = [(("teacher", i), (name, mapped[i])) for i in layers for name in others]  # every Gram made once
    slots = [(name, i) for i in layers for name in others]
    reps = {}

    def keep(metric, replicates):
        reps.update({(metric, *slot): r for slot, r in zip(slots, replicates)})

    keep("cka", metrics.gram_cka_replicates_pairs(
        pairs, lambda key: metrics.linear_gram(rows[key], torch.float32), groups, counts, settings.cka.debiased))
    if "rbf_cka" not in notes:
        keep("rbf_cka", metrics.rbf_cka_replicates_pairs(pairs, pooled.__getitem__, pooled_counts,
                                                         sigma_frac=settings.rbf_cka.sigma_frac,
                                                         debiased=settings.rbf_cka.debiased))
    if "mutual_knn" not in notes:
        keep("mutual_knn", metrics.mutual_knn_replicates_pairs(pairs, pooled.__getitem__, pooled_counts,
                                                               k=settings.mutual_knn.k))
    out = {metric: {} for metric in PER_LAYER}
    drawn = None  # control seeds drawn with replacement for each bootstrap draw
    for metric, name, i in reps:
        if name != "analog":
            continue
        how = {"sizes": sizes[metric], "share": shares[metric], "confidence": c.confidence}
        value = reps[metric, name, i]
        out[metric][i] = {"value": list(_interval(metric, value, values[metric][i], counts, how))}
        if (metric, "control", i) in reps:
            each = np.asarray(seeds[metric][i], dtype=np.float64)
            if drawn is None:
                drawn = np.random.default_rng(c.seed).integers(len(each), size=(c.resamples, len(each)))
            spread = np.full(len(counts), each.mean())
            spread[: c.resamples] = each[drawn].mean(axis=1)
            level = reps[metric, "control", i] - each[0] + spread
            out[metric][i]["chance"] = list(_interval(metric, level, chance[metric][i], counts, how))
            out[metric][i]["corrected"] = list(_interval(metric, (value, level), (values[metric][i], chance[metric][i]),
                                                         counts, how))
    return out


def _interval(metric, replicates, estimate, counts, how) -> tuple[float, float]:
    """A value's interval (``replicates``, ``estimate``: one set each) or a corrected score's (two each: value
    and chance). CKA (linear, RBF): the bias-corrected construction (`metrics.bias_corrected_interval`,
    `metrics.corrected_interval`). Mutual kNN, whose value depends on the number of prompts so that a
    leave-one-prompt-out jackknife reads that dependence as bias: the bootstrap draws moved onto the estimate
    (`metrics.centre`)."""
    if metric != "mutual_knn":
        if isinstance(estimate, tuple):
            return metrics.corrected_interval(*replicates, *estimate, counts, **how)
        return metrics.bias_corrected_interval(replicates, estimate, counts, **how)
    boot = len(counts) - counts.shape[1] - 1  # the bootstrap draws, before the jackknife entries
    if isinstance(estimate, tuple):
        value = metrics.centre(replicates[0][:boot], estimate[0])
        level = metrics.centre(replicates[1][:boot], estimate[1])
        return metrics.percentile_interval(metrics.centre(chance_corrected(value, level), chance_corrected(*estimate)),
                                           how["confidence"])
    return metrics.percentile_interval(metrics.centre(replicates[:boot], estimate), how["confidence"])


def _calibration(stream, found, config, notes) -> dict[str, Any]:
    """The permutation null of each per-layer metric and of each teacher layer's best match (`metrics.permutation`).

    Token-level CKA: ``chance.block_rows`` kept rows of each prompt from the layer-matrix sample (prompts with
    fewer are left out), every teacher layer against every analog layer, the analog's prompts permuted as
    blocks; each row's maximum over analog layers (all, and >= 1 as steering's best block match searches)
    against the maximum of the same permuted row. RBF CKA and kNN: the pooled rows, one per prompt.
    """
    c, settings, layers, mapped = config.chance, config.representation, stream.layers, stream.mapped
    row_prompt = np.repeat(stream.order, [len(stream.plan.prompts[k].teacher_rows) for k in stream.order])
    kept = np.flatnonzero(_left_in(stream.sample, found))
    prompt = row_prompt[stream.sample[kept]].astype(np.int64)
    blocks = [rows[: c.block_rows] for rows in np.split(kept[np.argsort(prompt, kind="stable")],
                                                        np.cumsum(np.bincount(prompt))[:-1])
              if len(rows) >= c.block_rows]
    out = {"permutations": c.permutations, "alpha": c.alpha, "block_rows": c.block_rows,
           "prompts": len(blocks), "rows": len(blocks) * c.block_rows}
    if len(blocks) >= 4:
        sample = torch.from_numpy(np.concatenate(blocks))
        grams = {name: [permutation.normalised_gram(x[sample], debiased=settings.cka.debiased) for x in stream.samples[name]]
                 for name in ("teacher", "analog")}
        observed, null = permutation.gram_nulls(grams["teacher"], grams["analog"],
                                                permutation.block_orders(len(blocks), c.permutations, c.seed), c.block_rows)
        observed, null = np.nan_to_num(observed, nan=-np.inf), np.nan_to_num(null, nan=-np.inf)  # NaN: a constant layer
        out["cka"] = {i: permutation.calibrate(observed[i, mapped[i]], null[:, i, mapped[i]], c.alpha) for i in layers}
        for key, first in (("best_match", 0), ("best_block", 1)):
            if observed.shape[1] > first:
                best = first + observed[:, first:].argmax(axis=1)
                out[key] = {i: {"layer": int(best[i]), **permutation.calibrate(
                    observed[i, best[i]], null[:, i, first:].max(axis=1), c.alpha)} for i in range(len(observed))}
    orders = permutation.block_orders(len(stream.order), c.permutations, c.seed)
    pairs = {i: (stream.pooled["teacher", i], stream.pooled["analog", mapped[i]]) for i in layers}
    if "rbf_cka" not in notes:
        out["rbf_cka"] = {}
        for i, (x, y) in pairs.items():
            kernels = [permutation.normalised_gram(z, "rbf", debiased=settings.rbf_cka.debiased,
                                                   sigma_frac=settings.rbf_cka.sigma_frac) for z in (x, y)]
            observed, null = permutation.gram_nulls(kernels[:1], kernels[1:], orders)
            out["rbf_cka"][i] = permutation.calibrate(observed[0, 0], null[:, 0, 0], c.alpha)
    if "mutual_knn" not in notes:
        out["mutual_knn"] = {i: permutation.calibrate(*permutation.knn_nulls(x, y, orders, settings.mutual_knn.k), c.alpha)
                             for i, (x, y) in pairs.items()}
    return out


def _geometry(part, model, vocab, config) -> tuple[dict[str, float | None], dict[str, str]]:
    """Embedding and unembedding geometry (Lee et al. 2025) over the teacher's sampled token rows (in ``part``)
    that ``model``'s vocabulary (``vocab``: its tokenizer's token -> id) holds with a non-zero row."""
    values, notes = {"embedding": None, "unembedding": None}, {}
    for name, getter in EMBEDDINGS.items():
        tokens, module = part.meta.get(f"{name}_tokens"), getattr(model.model, getter)()
        if tokens is None or module is None:
            notes[f"{name}_geometry"] = f"a model has no {name} matrix"
            continue
        weight = module.weight.detach()
        ids = np.asarray([vocab.get(token, -1) for token in tokens], dtype=np.int64)
        keep = usable_rows(weight, ids)
        if keep.sum() < config.embeddings.min_rows:
            notes[f"{name}_geometry"] = (
                f"not measurable: the two models share {int(keep.sum())} usable token rows of the teacher's "
                f"{len(tokens)} sampled (embeddings.rows); at least {config.embeddings.min_rows} are needed (embeddings.min_rows)"
            )
            continue
        t_rows = part.tensors[name][torch.from_numpy(keep)].double()
        values[name] = metrics.embedding_geometry_pearson(t_rows, weight[torch.from_numpy(ids[keep])].double().cpu())
    return values, notes
