"""Wall time of the representation measurement over the bare forward passes it needs.

Both models run the same prompts in the same batches (sorted by length, right
padded, every hidden state) once bare and once as the live gate does: the
teacher half (`suites.representation.teacher.teacher_part`, which keeps the
teacher's rows, top-k logits and embedding rows) and the analog half
(`representation.measure`, which adds the alignment, the streamed metrics, the
layer matrix and the geometry). The teacher half alone is also timed against
the teacher's bare forward passes (what a reference build costs over them).
Two figures: the representation suite alone (no output logits needed: neither
model computes them, the teacher's part holds none; target <= 1.3) and the
whole gate with logit fidelity (both forwards then compute logits).
Each runs with the default chance controls (``chance.seeds`` random models of
the analog's shape, read in the same pass, the bootstrap intervals and the
permutation null; their forward passes count as bare passes too) and without
them (``chance.control: none``). ``--suite-only`` times the representation
suite with the controls alone (no logits, no teacher-half figure).
Default pair: SmolLM2-135M-Instruct against itself. A last, timed run prints
what parts of the measurement cost: the CKA streams, the massive-row search and
the influence figure, the token-level CKA bootstrap (and, within it, its Gram
matrices), the kNN bootstrap and the layer matrix.

    python benchmarks/bench_representation.py [--prompts 128] [--student DIR] [--repeats 2] [--suite-only]
        [--set chance.seeds=1 ...]
"""

import argparse
import contextlib
import time

import torch

from pytest_analog.capture import plan_alignment
from pytest_analog.config import load_config
from pytest_analog.demo import smollm2_gguf
from pytest_analog.suites.representation.analog import measure
from pytest_analog.suites.representation.teacher import teacher_part
from pytest_analog.layers import gated_layers
from pytest_analog.models import ModelPair, load_model
from pytest_analog.prompts import load_prompts
from pytest_analog.controls import control_models


def bare_forward_seconds(pair, plan, batch_size: int, with_logits: bool, controls=(), analog: bool = True) -> float:
    from pytest_analog.capture import forward

    order = sorted(range(len(plan.prompts)), key=lambda i: len(plan.prompts[i].teacher_ids))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = [plan.prompts[i] for i in order[start : start + batch_size]]
            forward(pair.teacher, [p.teacher_ids for p in chunk], with_logits)
            if analog:
                forward(pair.analog, [p.analog_ids for p in chunk], with_logits)
            for control in controls or ():
                forward(control, [p.analog_ids for p in chunk], False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--student", default=None, help="analog model (default: the teacher itself)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--suite-only", action="store_true", help="only the representation suite with its controls")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config setting (YAML value), e.g. chance.seeds=1; repeatable")
    args = parser.parse_args()

    teacher = load_model(str(smollm2_gguf()), device="cpu", dtype="float32")
    analog = load_model(args.student, device="cpu", dtype="float32") if args.student else teacher
    pair = ModelPair(teacher, analog)
    import yaml

    settings = dict(item.split("=", 1) for item in args.set)
    config = load_config(**{"prompts.max_prompts": args.prompts, **{k: yaml.safe_load(v) for k, v in settings.items()}})
    prompts = load_prompts(config.prompts.set, args.prompts)
    plan = plan_alignment(
        teacher.tokenizer, analog.tokenizer, prompts.texts, same_tokenizer=pair.same_tokenizer,
        max_length=config.prompts.max_length, skip_first=config.positions.skip_first,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(plan.prompts)} prompts, "
          f"{sum(len(p.teacher_ids) for p in plan.prompts)} tokens, {plan.n_rows} aligned rows, "
          f"{len(gated_layers(config, teacher.num_layers))} gated layers, {config.layers.matrix_rows} matrix rows")
    control = control_models(analog, config.chance.control, config.chance.seed, config.chance.seeds)
    bare_forward_seconds(pair, plan, config.batch_size, False)  # warm-up
    labels = (("representation suite", False),) if args.suite_only else (("representation suite", False), ("whole gate with logits", True))
    for label, with_logits in labels:
        for chance, ctl in ((f"with {len(control)} chance controls", control), ("without", None))[: 1 if args.suite_only else 2]:
            bare, full = [], []
            for _ in range(args.repeats):
                bare.append(bare_forward_seconds(pair, plan, config.batch_size, with_logits, ctl))
                started = time.perf_counter()
                part = teacher_part(teacher, config, prompts=prompts, with_logits=with_logits)
                measure(pair, part, prompts, config, with_logits=with_logits, control=ctl)
                full.append(time.perf_counter() - started)
            print(f"{label}, {chance}: bare forward passes {min(bare):.2f} s, measurement {min(full):.2f} s "
                  f"(best of {args.repeats}); ratio {min(full) / min(bare):.2f}")
    for with_logits in () if args.suite_only else (False, True):
        bare, half = [], []
        for _ in range(args.repeats):
            bare.append(bare_forward_seconds(pair, plan, config.batch_size, with_logits, analog=False))
            started = time.perf_counter()
            teacher_part(teacher, config, prompts=prompts, with_logits=with_logits)
            half.append(time.perf_counter() - started)
        print(f"teacher half {'with' if with_logits else 'without'} logits: bare teacher forward passes {min(bare):.2f} s, "
              f"teacher_part {min(half):.2f} s (best of {args.repeats}); ratio {min(half) / min(bare):.2f}")
    print_part_costs(pair, teacher_part(teacher, config, prompts=prompts, with_logits=False), prompts, config, control)


# the parts whose time is printed: (module, attribute) as the measurement looks them up
PARTS = {
    "CKA streams over every row": ("pytest_analog.metrics", "StreamingLinearCKA.update_each"),
    "massive rows: norms and candidates": ("pytest_analog.massive", "TopRows.update"),
    "massive rows left out + influence figure": ("pytest_analog.suites.representation.analog", "_leave_out"),
    "token-level CKA bootstrap (Gram matrices included)": ("pytest_analog.metrics", "gram_cka_replicates_pairs"),
    "  of which its Gram matrices": ("pytest_analog.metrics", "linear_gram"),
    "kNN bootstrap": ("pytest_analog.metrics", "mutual_knn_replicates_pairs"),
    "layer matrix": ("pytest_analog.metrics", "cka_matrix"),
    "permutation null (every metric, best matches)": ("pytest_analog.suites.representation.analog", "_calibration"),
}


def print_part_costs(pair, part, prompts, config, control) -> None:
    """Wall seconds of each part in one more analog half (representation suite, with the control)."""
    import importlib
    from unittest import mock

    seconds = dict.fromkeys(PARTS, 0.0)

    def timed(label, fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - started
        return wrapper

    with contextlib.ExitStack() as stack:
        for label, (module, attribute) in PARTS.items():
            owner = importlib.import_module(module)
            *path, name = attribute.split(".")
            for name_in_path in path:
                owner = getattr(owner, name_in_path)
            stack.enter_context(mock.patch.object(owner, name, timed(label, getattr(owner, name))))
        started = time.perf_counter()
        measure(pair, part, prompts, config, with_logits=False, control=control)
        total = time.perf_counter() - started
    print(f"parts of one more measurement ({total:.2f} s):")
    for label, spent in seconds.items():
        print(f"  {label}: {spent:.2f} s ({100 * spent / total:.1f} %)")


if __name__ == "__main__":
    main()
