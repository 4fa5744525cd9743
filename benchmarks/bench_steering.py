"""Cost of the steering suite: its extra forward passes, its wall time over theirs, and map fitting at scale.

1. Runs `steering_analysis` with the shipped defaults (``steering`` in defaults.yaml)
   and counts the forward passes it adds to a run; then runs exactly those passes
   bare (same sequences, batches and padding, no hooks, maps or metrics) and prints
   wall time over bare time (target <= 1.2).
2. Fits the ridge and Procrustes maps from 100,000 streamed paired rows,
   d = 576 -> 576 (SmolLM2's width), and the autoencoder on the same rows: time
   and peak resident memory.

Default pair: SmolLM2-135M-Instruct against itself (analog layer = teacher layer).

    python benchmarks/bench_steering.py [--behaviours sentiment,french] [--student DIR] [--skip-suite]
"""

import argparse
import dataclasses
import resource
import time

import torch

from pytest_analog.capture import forward, padded, plan_alignment
from pytest_analog.config import load_config
from pytest_analog.demo import smollm2_gguf
from pytest_analog.models import ModelPair, load_model
from pytest_analog.prompts import load_prompts
from pytest_analog.steering import (
    PairedMoments,
    fit_autoencoder,
    fit_map,
    load_behaviour,
    steering_analysis,
)
from pytest_analog.steering.behaviours import answer_tokens
from pytest_analog.suites.steering.layers import steering_layers


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_seconds(pair, behaviours, layer_pairs, s, map_texts) -> float:
    """The suite's forward passes with nothing around them."""
    plan = plan_alignment(pair.teacher.tokenizer, pair.analog.tokenizer, list(map_texts), same_tokenizer=pair.same_tokenizer,
                          max_length=s.max_length, skip_first=True)
    prompts = sorted(plan.prompts, key=lambda p: len(p.teacher_ids))
    started = time.perf_counter()
    with torch.inference_mode():
        for k in range(0, len(prompts), s.batch_size):
            chunk = prompts[k : k + s.batch_size]
            forward(pair.teacher, [p.teacher_ids for p in chunk], False)
            forward(pair.analog, [p.analog_ids for p in chunk], False)
        doses = 1 + 3 * len(layer_pairs) * sum(a != 0 for a in s.alphas)
        for b in behaviours:
            train = b.train[: s.train_items]
            texts = [i.positive for i in train] + [i.negative for i in train]
            for model in (pair.teacher, pair.analog):
                for k in range(0, len(texts), s.batch_size):
                    forward(model, [model.tokenizer(t)["input_ids"] for t in texts[k : k + s.batch_size]], False)
            encoded = [answer_tokens(pair.teacher.tokenizer, i)[0] for i in b.eval[: s.eval_items]]
            for dose in range(doses):
                for k in range(0, len(encoded), s.batch_size):
                    ids, mask, positions = padded(pair.teacher, encoded[k : k + s.batch_size], left=True)
                    pair.teacher.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                                       logits_to_keep=1, output_hidden_states=dose == 0)
    return time.perf_counter() - started


def bench_suite(args) -> None:
    teacher = load_model(str(smollm2_gguf()), device="cpu", dtype="float32")
    student = load_model(args.student, device="cpu", dtype="float32") if args.student else teacher
    pair = ModelPair(teacher, student)
    config = load_config()
    s = config.steering
    if args.behaviours:
        s = dataclasses.replace(s, behaviours=args.behaviours.split(","))
    behaviours = [load_behaviour(b) for b in s.behaviours]
    # the suite's layer map comes from CKA best match; against itself that is the same layer
    layer_pairs = steering_layers(dataclasses.replace(s, analog_layers="proportional"), teacher.num_layers, student.num_layers)
    map_texts = load_prompts(config.prompts.set, s.map_prompts).texts
    started = time.perf_counter()
    result = steering_analysis(pair, behaviours, layer_pairs, s, map_texts=map_texts)
    full = time.perf_counter() - started
    bare = bare_seconds(pair, behaviours, layer_pairs, s, map_texts)
    passes = result["forward_passes"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(behaviours)} behaviours x "
          f"{len(layer_pairs)} layer(s), {s.train_items} train pairs, {s.eval_items} eval items, alphas {s.alphas}")
    print(f"extra forward passes: teacher {passes['teacher_batches']} batches / {passes['teacher_sequences']} sequences, "
          f"analog {passes['analog_batches']} batches / {passes['analog_sequences']} sequences")
    print(f"steering suite {full:.1f} s, its bare forward passes {bare:.1f} s: ratio {full / bare:.2f} (target <= 1.2)")
    for name, layers in result["behaviours"].items():
        for layer, case in layers.items():
            print(f"  {name} @ {layer}: baseline {case['baseline']:.3f}, native effects {[round(e, 3) for e in case['effect']['native']]}, "
                  f"random {[round(e, 3) for e in case['effect']['random']]}, transfer ratio {case['transfer_ratio']}")


def bench_maps(rows: int = 100_000, d: int = 576, chunk: int = 4096) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(d, d, generator=generator) / d**0.5
    moments = PairedMoments()
    before = _peak_mb()
    started = time.perf_counter()
    xs, ys = [], []
    for k in range(0, rows, chunk):
        x = torch.randn(min(chunk, rows - k), d, generator=generator)
        y = x @ weight + 0.1 * torch.randn(len(x), d, generator=generator)
        moments.update(x, y)
        xs.append(x)
        ys.append(y)
    streamed = time.perf_counter() - started
    fit_started = time.perf_counter()
    fit_map("ridge", moments, ridge=1e-3)
    ridge = time.perf_counter() - fit_started
    fit_started = time.perf_counter()
    fit_map("procrustes", moments)
    procrustes = time.perf_counter() - fit_started
    stream_peak = _peak_mb()
    print(f"maps at {rows:,} paired rows, d = {d} -> {d}: streaming the sums {streamed:.2f} s (rows generated inside), "
          f"ridge solve {ridge:.2f} s, procrustes {procrustes:.2f} s; peak RSS growth {stream_peak - before:.0f} MB "
          f"(incl. the {rows * d * 8 / 2**20:.0f} MB of rows kept for the autoencoder)")
    x, y = torch.cat(xs), torch.cat(ys)
    started = time.perf_counter()
    fit_autoencoder(x, y, steps=load_config().steering.autoencoder_steps)
    print(f"autoencoder (h = {d}, {load_config().steering.autoencoder_steps} steps of 256 rows): {time.perf_counter() - started:.2f} s, "
          f"peak RSS {_peak_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviours", default=None, help="comma-separated behaviour sets (default: the config's)")
    parser.add_argument("--student", default=None, help="analog model (default: the teacher itself)")
    parser.add_argument("--skip-suite", action="store_true", help="only the map-fitting benchmark")
    args = parser.parse_args()
    bench_maps()
    if not args.skip_suite:
        bench_suite(args)


if __name__ == "__main__":
    main()
