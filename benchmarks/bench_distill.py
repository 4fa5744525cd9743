"""Distillation speed over a bare training step, and analog quality at a fixed CPU budget.

1. Overhead: tokens per second of a distillation step (student forward, loss
   against the cached top-k teacher targets, backward, AdamW) over a bare
   language-model step (forward, cross-entropy, backward, AdamW) of the same
   5 % SmolLM2 student on the same batch (of the shipped corpus); target <= 1.3x. With and without
   hidden-state alignment.
2. Quality: a 5 % analog of SmolLM2-135M-Instruct distilled for each ``--budget``
   (seconds of training) or for ``--train-steps`` steps, by the built-in method
   (the demo's recipe: pruned init, alignment, best held-out checkpoint) and by
   a naive baseline of the same shape on the same data (random init, forward KL
   only, the last step released), measured by the gate's own metrics on its
   default prompts: KL(teacher ‖ analog), exact (over the whole vocabulary) and
   as the gate reports it (the teacher's top 64 tokens and the rest as one
   bucket, a lower bound), and the mean over teacher layers of the best analog
   layer's CKA. A random student of the same shape is the floor.

    python benchmarks/bench_distill.py [--budget 300 600] [--train-steps N] [--steps 8] [--prompts 32]
                                       [--corpus generate:N] [--mix builtin] [--cache DIR] [--keep DIR]
                                       [--skip-quality]

``--cache`` keeps the generated corpus and the teacher's targets between runs
(generation is a one-time cost, outside the training budget); ``--keep`` keeps
the distilled analogs.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pytest_analog.config import load_config
from pytest_analog.demo import DEMO_DISTILLATION, smollm2_gguf
from pytest_analog.distill import DistillConfig, distill
from pytest_analog.distill.data import read_texts, teacher_targets, token_chunks
from pytest_analog.distill.student import kept_blocks, plan_shape, random_student, student_config
from pytest_analog.distill.train import Trainee, align_map
from pytest_analog.suites.representation.analog import measure
from pytest_analog.suites.representation.teacher import teacher_part
from pytest_analog.models import ModelPair, load_model
from pytest_analog.prompts import load_prompts


def interleaved_medians(steps: dict, n: int) -> dict:
    """Median seconds of each step function, run in turn ``n`` times after a warm-up (fair under shared CPUs)."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def overhead(teacher, n: int) -> None:
    config = DistillConfig(teacher="smollm2", fraction=0.05, init="random")
    shape = plan_shape(teacher.model.config, config.fraction)
    s_config = student_config(teacher.model.config, shape, kept_blocks(teacher.num_layers, shape.layers, "uniform"))
    chunks = token_chunks(teacher.tokenizer, read_texts("builtin"), config.seq_len)[: config.batch_size]
    pairs = align_map(teacher.num_layers, shape.layers)
    targets = teacher_targets(teacher.model, chunks, temperature=1.0, top_k=config.top_k, layers=sorted(set(pairs.values())))
    tokens = chunks.numel()
    print(f"student: {shape.parameters:,} parameters ({shape.fraction:.2%}), batch {tuple(chunks.shape)}, "
          f"{torch.get_num_threads()} threads")

    def runner(loss_fn, module):
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

        def step():
            loss_fn(module).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    steps = {"bare LM step": runner(
        lambda m: F.cross_entropy(m(input_ids=chunks).logits[:, :-1].flatten(0, 1), chunks[:, 1:].flatten()),
        random_student(s_config, 0).train(),
    )}
    for align in ("none", "cosine"):
        cfg = DistillConfig(teacher="smollm2", align=align)
        trainee = Trainee(random_student(s_config, 0).train(), pairs if align != "none" else {}, teacher.model.config.hidden_size)
        steps[f"distillation, align {align}"] = runner(lambda m, cfg=cfg: m(chunks, targets, cfg), trainee)
    seconds = interleaved_medians(steps, n)
    bare = seconds["bare LM step"]
    for name, t in seconds.items():
        print(f"{name:28s} {tokens / t:8.0f} tok/s   {t / bare:.2f}x the bare step (target <= 1.3x)")


def quality(teacher, budgets: list[float], train_steps: int | None, n_prompts: int, corpus: str, mix: str,
            cache: Path | None, keep: Path | None) -> None:
    fidelity = load_config(**{"prompts.max_prompts": n_prompts})
    vocab = len(teacher.tokenizer)
    exact = load_config(**{"prompts.max_prompts": n_prompts, "logits.top_k": vocab, "chance.resamples": 0})
    prompts = load_prompts("default", max_prompts=n_prompts)
    source = str(teacher.source.directory / teacher.source.gguf_file)

    part, exact_part = (teacher_part(teacher, config, prompts=prompts) for config in (fidelity, exact))

    def scores(student):
        m = measure(ModelPair(teacher, student), part, prompts, fidelity)
        kl = measure(ModelPair(teacher, student), exact_part, prompts, exact).logits["kl"]
        best = np.nanmax(np.asarray(m.cka_matrix), axis=1).mean()
        return kl, m.logits["kl"], best, np.mean(list(m.cka.values()))

    # the built-in method is the demo's recipe; the baseline is a plain one of the same shape on the same data
    data = {"corpus": corpus, "mix": mix}
    methods = {"built-in": {**DEMO_DISTILLATION, **data},
               "naive baseline": {"fraction": DEMO_DISTILLATION["fraction"], **data, "init": "random",
                                  "loss": "forward_kl", "align": "none", "eval_every": 10**9}}
    limits = [{"max_steps": train_steps}] if train_steps else [{"max_steps": 100_000, "max_seconds": b} for b in budgets]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = keep or tmp
        for limit in limits:
            for name, recipe in methods.items():
                config = DistillConfig(teacher=source, device="cpu", **{**recipe, **limit})
                started = time.perf_counter()
                out = distill(config, Path(tmp) / f"{name}-{len(rows)}", cache_dir=cache or Path(tmp) / "cache")
                record = json.loads((out / "training.json").read_text())
                analog = load_model(str(out), device="cpu", dtype="float32")
                rows.append((limit, name, record["steps"], record["best_step"], time.perf_counter() - started, *scores(analog)))
        random = random_student(analog.model.config, 1)
        random_dir = Path(tmp) / "random"
        random.save_pretrained(random_dir)
        analog.tokenizer.save_pretrained(random_dir)
        floor = scores(load_model(str(random_dir), device="cpu", dtype="float32"))
    print(f"\nquality ({n_prompts} gate prompts, never trained on; corpus {corpus}, mix {mix}; "
          f"load average {os.getloadavg()[0]:.1f}):")
    print(f"{'limit':>12s} {'analog':16s} {'steps':>6s} {'best':>6s} {'wall s':>7s} {'KL':>7s} {'top-64 KL':>10s} "
          f"{'best-layer CKA':>15s} {'gated CKA':>10s}")
    for limit, name, steps, best_step, wall, kl, top, best, gated in rows:
        print(f"{_label(limit):>12s} {name:16s} {steps:6d} {best_step:6d} {wall:7.0f} {kl:7.3f} {top:10.3f} {best:15.3f} {gated:10.3f}")
    print(f"{'':>12s} {'random init':16s} {0:6d} {0:6d} {0:7.0f} {floor[0]:7.3f} {floor[1]:10.3f} {floor[2]:15.3f} {floor[3]:10.3f}")
    for i in range(0, len(rows), 2):
        ours, base = rows[i][5:], rows[i + 1][5:]
        print(f"{rows[i][1]} vs {rows[i + 1][1]} at {_label(rows[i][0])}: KL {ours[0]:.3f} vs {base[0]:.3f}, "
              f"best-layer CKA {ours[2]:.3f} vs {base[2]:.3f}, gated CKA {ours[3]:.3f} vs {base[3]:.3f}")


def _label(limit: dict) -> str:
    return f"{limit['max_seconds']:.0f} s" if "max_seconds" in limit else f"{limit['max_steps']} steps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, nargs="+", default=[600],
                        help="training seconds per analog; several give one pair of analogs each (default: 600)")
    parser.add_argument("--train-steps", type=int,
                        help="train each analog this many steps instead of a time budget (a step-matched comparison "
                             "on a loaded machine)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per overhead figure (default: 8)")
    parser.add_argument("--prompts", type=int, default=32, help="gate prompts for the quality figures (default: 32)")
    parser.add_argument("--corpus", default="builtin", help="distillation corpus (default: the shipped one)")
    parser.add_argument("--mix", default="none", help="with --corpus generate:N, also train on this corpus")
    parser.add_argument("--cache", type=Path, help="keep the generated corpus and teacher targets here between runs")
    parser.add_argument("--keep", type=Path, help="keep the distilled analogs in this folder")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    teacher = load_model(str(smollm2_gguf()), device="cpu", dtype="float32")
    overhead(teacher, args.steps)
    if not args.skip_quality:
        quality(teacher, args.budget, args.train_steps, args.prompts, args.corpus, args.mix, args.cache, args.keep)


if __name__ == "__main__":
    main()
