"""Does a steering vector found on the analog work on the teacher? Dose-response of native, transferred and random vectors.

For one teacher layer i and its analog layer j:

1. paired activations of both models over a neutral prompt set (the single
   `capture` pass with its token or word alignment) fit maps analog j -> teacher i;
2. the analog's steering vector at j is carried through the map (the mean
   difference of the mapped positive and negative activations) and compared with
   the teacher's native vector at i and an equal-norm random vector;
3. each is added to the teacher at α × (mean residual norm at layer i over the
   steered positions, the first position left out), and p(matching) is read from
   next-token logits of held-out items.

Results are plain dicts of numbers (JSON-ready).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pytest_analog.capture import padded, plan_alignment
from pytest_analog.errors import AnalogError
from pytest_analog.metrics import centre, percentile_interval, resample_counts
from pytest_analog.criterion import chance_corrected
from pytest_analog.steering.behaviours import answer_tokens, matching_probability
from pytest_analog.steering.hooks import steer
from pytest_analog.steering.maps import MAP_KINDS, PairedMoments, evaluate, fit_map
from pytest_analog.steering.vectors import token_states

CONDITIONS = ("native", "transferred", "random")
# Without the teacher (a teacher reference) the transferred vector's effect is not measured: these criteria have no value.
NEEDS_TEACHER = "needs the teacher: the transferred vector's behavioural effect is measured on the teacher (reference mode)"
TEACHER_ONLY = ("transfer_ratio", "transfer_gap", "spearman")


@dataclass
class PassCounter:
    """Forward passes (batches) and sequences each model ran, for the benchmark and the report."""

    teacher_batches: int = 0
    teacher_sequences: int = 0
    analog_batches: int = 0
    analog_sequences: int = 0

    def add(self, model: str, sequences: int, batch_size: int) -> None:
        setattr(self, f"{model}_batches", getattr(self, f"{model}_batches") + math.ceil(sequences / batch_size))
        setattr(self, f"{model}_sequences", getattr(self, f"{model}_sequences") + sequences)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# -- maps -------------------------------------------------------------------------------------


@dataclass
class MapStates:
    """The teacher's hidden states at every token of each map-fitting prompt (a steering part holds them)."""

    states: dict[int, torch.Tensor]  # teacher layer -> [sum of lengths, d], prompt after prompt
    lengths: list[int]  # tokens of each prompt after truncation


def map_states(teacher, texts, layers, *, max_length: int, batch_size: int) -> MapStates:
    """`MapStates` of ``teacher`` (a `LoadedModel`) over ``texts`` at ``layers``, truncated as `capture` truncates."""
    ids = [teacher.tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    return MapStates(token_states(teacher, ids, sorted(set(layers)), batch_size=batch_size), [len(x) for x in ids])


def paired_activations(pair, texts, layer_pairs, teacher: MapStates, *, max_length: int, skip_first: bool, batch_size: int,
                       holdout: int = 5):
    """Paired rows (analog layer j, teacher layer i) over ``texts``, the teacher's from ``teacher``; every
    ``holdout``-th aligned prompt is held out.

    Returns:
        {(i, j): (PairedMoments of the fitting rows, fitting rows (x, y), held-out rows (x, y))}, the
        alignment mode, and the numbers of fitting and held-out prompts.
    """
    aligned = [
        (k, prompt) for k, text in enumerate(texts)
        for prompt in plan_alignment(pair.teacher.tokenizer, pair.analog.tokenizer, [text], same_tokenizer=pair.same_tokenizer,
                                     max_length=max_length, skip_first=skip_first).prompts
    ]
    if any(len(p.teacher_ids) != teacher.lengths[k] for k, p in aligned):
        raise AnalogError("the teacher's map activations were taken over another tokenization of the map prompts "
                          "(steering.max_length or the teacher's tokenizer differ)")
    held = [n for n in range(len(aligned)) if n % holdout == holdout - 1]
    fit = [n for n in range(len(aligned)) if n % holdout != holdout - 1]
    if not held or sum(len(aligned[n][1].teacher_rows) for n in fit) < 2:
        raise AnalogError(f"only {len(aligned)} aligned prompts for fitting maps; give more prompts (steering.map_prompts)")
    analog = token_states(pair.analog, [p.analog_ids for _, p in aligned], sorted({j for _, j in layer_pairs}),
                          batch_size=batch_size)
    t_start = np.concatenate([[0], np.cumsum(teacher.lengths)])
    a_start = np.concatenate([[0], np.cumsum([len(p.analog_ids) for _, p in aligned])])

    def rows(subset):  # row indices of the aligned positions of these prompts, in both models' states
        t = np.concatenate([t_start[aligned[n][0]] + aligned[n][1].teacher_rows for n in subset])
        a = np.concatenate([a_start[n] + aligned[n][1].analog_rows for n in subset])
        return torch.from_numpy(a.astype(np.int64)), torch.from_numpy(t.astype(np.int64))

    out = {}
    for i, j in layer_pairs:
        (fa, ft), (ha, ht) = rows(fit), rows(held)
        x, y = analog[j][fa].double(), teacher.states[i][ft].double()
        moments = PairedMoments()
        moments.update(x, y)
        out[(i, j)] = (moments, (x, y), (analog[j][ha].double(), teacher.states[i][ht].double()))
    return out, "token" if pair.same_tokenizer else "word", (len(fit), len(held))


def fit_maps(pair, texts, layer_pairs, *, kinds=MAP_KINDS, ridge=1e-3, steps=300, seed=0, max_length=128,
             skip_first=True, batch_size=8, teacher: MapStates | None = None) -> dict:
    """Fit each map kind for each (teacher layer, analog layer) pair and score it on held-out prompts.

    ``teacher``: the teacher's `MapStates` over ``texts`` (a teacher reference's); None: taken from ``pair.teacher``.

    Returns:
        {(i, j): {"maps": {kind: map}, "heldout": {kind: {"fvu", "cosine"}}, "rows": {"fit", "heldout"}}}.
    """
    if teacher is None:
        teacher = map_states(pair.teacher, texts, [i for i, _ in layer_pairs], max_length=max_length, batch_size=batch_size)
    rows, mode, prompts = paired_activations(pair, texts, layer_pairs, teacher, max_length=max_length, skip_first=skip_first,
                                             batch_size=batch_size)
    result = {}
    for key, (moments, (x, y), (hx, hy)) in rows.items():
        maps = {kind: fit_map(kind, moments, x, y, ridge=ridge, steps=steps, seed=seed) for kind in kinds}
        result[key] = {
            "maps": maps,
            "heldout": {kind: evaluate(m, hx, hy) for kind, m in maps.items()},
            "rows": {"fit": len(x), "heldout": len(hx)},
            "alignment": mode,
            "prompts": prompts,
        }
    return result


def transfer_vector(mapping, positive, negative) -> torch.Tensor:
    """The analog's vector in the teacher's space: mean of mapped(positive) − mapped(negative) (bias cancels)."""
    return (torch.as_tensor(mapping(positive)).double() - torch.as_tensor(mapping(negative)).double()).mean(0)


# -- measurement on the teacher ------------------------------------------------------------------


def behaviour_probabilities(model, items, *, layer=None, vector=None, alpha: float = 0.0, from_position: int = 1,
                            batch_size: int = 16, norm_layer: int | None = None, counter: PassCounter | None = None):
    """p(matching) / (p(matching) + p(other)) per item, with ``alpha * vector`` added at ``layer`` (none when alpha is 0).

    Items are left padded with position ids counted per sequence. With
    ``norm_layer`` also returns the mean hidden-state norm at that layer over
    positions with position id >= ``from_position``.
    """
    encoded = [answer_tokens(model.tokenizer, item) for item in items]
    probabilities, norm_sum, norm_count = [], 0.0, 0
    device = model.input_device
    steering = steer(model, layer, vector, alpha, from_position=from_position) if alpha else contextlib.nullcontext()
    with steering, torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            ids, mask, positions = padded(model, [c[0] for c in chunk], left=True)
            kwargs = {"output_hidden_states": True} if norm_layer is not None else {}
            out = model.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                              use_cache=False, logits_to_keep=1, **kwargs)
            if counter is not None:
                counter.add("teacher", len(chunk), batch_size)
            logits = out.logits[:, -1].float().cpu()
            probabilities.append(matching_probability(logits, torch.tensor([c[1] for c in chunk]), torch.tensor([c[2] for c in chunk])))
            if norm_layer is not None:
                keep = (mask.bool() & (positions >= from_position)).to(out.hidden_states[norm_layer].device)
                norms = out.hidden_states[norm_layer].double().norm(dim=-1)[keep]
                norm_sum, norm_count = norm_sum + float(norms.sum()), norm_count + int(norms.numel())
    p = torch.cat(probabilities)
    if norm_layer is None:
        return p
    if norm_count == 0:
        raise AnalogError(f"no positions at or after position {from_position} to measure the residual norm on")
    return p, norm_sum / norm_count


def random_name(v: int) -> str:
    """The curve name of random vector ``v``: "random" for the first (the random control's), "random:v" after."""
    return "random" if v == 0 else f"random:{v}"


def random_direction(d: int, seed: int) -> torch.Tensor:
    """A unit vector drawn uniformly on the sphere (fixed seed)."""
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return v / v.norm()


def dose_response(model, items, layer: int, vectors: dict[str, torch.Tensor], alphas, *, from_position: int = 1,
                  batch_size: int = 16, counter: PassCounter | None = None, base=None) -> dict:
    """p(matching) over norm-relative α for each named vector (unit-normalised; α × mean residual norm is added).

    ``base``: the unsteered curve's ``(baseline_items, residual_norm)`` where they were measured already
    (a teacher reference's), else they are measured here.

    Returns a plain dict: alphas, residual_norm, baseline, probability[name][k], effect[name][k] (minus baseline).
    """
    alphas = [float(a) for a in alphas]
    if base is None:
        base, norm = behaviour_probabilities(model, items, from_position=from_position, batch_size=batch_size,
                                             norm_layer=layer, counter=counter)
    else:
        base, norm = torch.as_tensor(base[0], dtype=torch.float64), float(base[1])
    baseline = float(base.mean())
    per_item = {}
    for name, vector in vectors.items():
        v = torch.as_tensor(vector).double()
        if not torch.isfinite(v).all() or v.norm() == 0:
            raise AnalogError(f"the {name} steering vector is zero or not finite; it has no direction to steer along")
        unit = v / v.norm()
        per_item[name] = [
            base if a == 0 else behaviour_probabilities(
                model, items, layer=layer, vector=unit, alpha=a * norm, from_position=from_position,
                batch_size=batch_size, counter=counter)
            for a in alphas
        ]
    probability = {name: [float(p.mean()) for p in ps] for name, ps in per_item.items()}
    return {
        "alphas": alphas,
        "residual_norm": norm,
        "baseline": baseline,
        "probability": probability,
        "effect": {name: [p - baseline for p in ps] for name, ps in probability.items()},
        "baseline_items": base.tolist(),  # per eval item, for intervals over items
        "item_probability": {name: [p.tolist() for p in ps] for name, ps in per_item.items()},
    }


def _ratio_against_chance(curve: dict, k: int, *, resamples: int, confidence: float, seed: int) -> dict:
    """The transfer ratio's chance level (the mean size of the equal-norm random vectors' effects over the
    native effect at the same dose) and bootstrap intervals, as `criterion.Measured` fields.

    The random directions' sign is arbitrary (each one's opposite is as random), so their effects count by
    magnitude: a random vector that happened to push the behaviour down is no lower a chance level. Each
    bootstrap draw resamples the eval items and, for the chance level, the random vectors too, so the
    interval carries the direction-to-direction spread beside the items'.
    """
    base = np.asarray(curve["baseline_items"])
    effect = {name: np.asarray(ps[k]) - base for name, ps in curve["item_probability"].items()}
    randoms = [name for name in effect if name == "random" or name.startswith("random:")]
    weights = resample_counts(len(base), resamples, seed) / len(base)
    mean = {name: weights @ e for name, e in effect.items()}
    sizes = np.abs(np.stack([mean[name] for name in randoms], axis=1))  # [draws, random vectors]
    drawn = np.random.default_rng(seed).integers(len(randoms), size=sizes.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = mean["transferred"] / mean["native"]
        chance = np.take_along_axis(sizes, drawn, axis=1).mean(axis=1) / mean["native"]
    full = {name: float(e.mean()) for name, e in effect.items()}
    estimate = {"ratio": full["transferred"] / full["native"],
                "chance": float(np.mean([abs(full[name]) for name in randoms])) / full["native"]}
    # each interval is moved onto its own estimate (see `metrics.centre`)
    ratio, chance = centre(ratio, estimate["ratio"]), centre(chance, estimate["chance"])
    corrected = centre(chance_corrected(ratio, chance), chance_corrected(estimate["ratio"], estimate["chance"]))
    return {
        "chance": estimate["chance"],
        "interval": percentile_interval(ratio, confidence),
        "chance_interval": percentile_interval(chance, confidence),
        "corrected_interval": percentile_interval(corrected, confidence),
    }


def transfer_criteria(curve: dict, *, min_native_effect: float, resamples: int = 200, confidence: float = 0.95,
                      seed: int = 0) -> dict:
    """Transfer ratio, gap, Spearman ρ and random control from a `dose_response` of native, transferred and random.

    - half_max_alpha: the smallest α > 0 where the native effect reaches half its maximum over α > 0;
    - transfer_ratio: transferred effect / native effect there; transfer_gap = 1 − ratio;
    - spearman: ρ between α and each vector's p(matching);
    - random_control: max |random effect| / max |native effect| over α;
    - transfer_ratio_chance: the ratio's chance level (mean |random effect| over the random vectors /
      native effect at the same dose) and intervals over eval items and random vectors (``resamples``
      bootstrap draws).
    Values that are undefined are None with the reason in ``notes``.
    """
    from scipy.stats import spearmanr

    alphas = curve["alphas"]
    effect = curve["effect"]
    positive = [k for k, a in enumerate(alphas) if a > 0]
    notes = {}
    native_max = max((effect["native"][k] for k in positive), default=float("nan"))
    ratio = half_alpha = None
    if "transferred" not in effect:
        notes["transfer_ratio"] = NEEDS_TEACHER
    elif not positive:
        notes["transfer_ratio"] = "no α > 0 in steering.alphas"
    elif not native_max >= min_native_effect:
        notes["transfer_ratio"] = (
            f"the native vector moves p(matching) by at most {native_max:+.3f} (needs >= {min_native_effect:g}); "
            "there is no native dose response to transfer"
        )
    else:
        k = next(k for k in positive if effect["native"][k] >= native_max / 2)
        half_alpha = alphas[k]
        ratio = effect["transferred"][k] / effect["native"][k]
    spearman = {}
    for name, ps in curve["probability"].items():
        rho = spearmanr(alphas, ps).statistic if len(set(ps)) > 1 and len(alphas) > 2 else float("nan")
        spearman[name] = None if not math.isfinite(rho) else float(rho)
    native_abs = max(abs(e) for e in effect["native"])
    control = max(abs(e) for e in effect["random"]) / native_abs if native_abs > 0 else None
    if control is None:
        notes["random_control"] = "the native vector does not move p(matching) at all"
    return {
        "half_max_alpha": half_alpha,
        "transfer_ratio": ratio,
        "transfer_ratio_chance": {} if ratio is None or "item_probability" not in curve else _ratio_against_chance(
            curve, alphas.index(half_alpha), resamples=resamples, confidence=confidence, seed=seed
        ),
        "transfer_gap": None if ratio is None else 1 - ratio,
        "spearman": spearman,
        "random_control": control,
        "native_max_effect": native_max,
        "notes": notes,
    }
