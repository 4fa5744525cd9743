"""Teacher references: build time, gate time without the teacher, and size.

Prints three figures for SmolLM2-135M-Instruct (the teacher) and an analog:

1. build: the representation part (hidden states at the gated layers, the
   layer-matrix sample, top-k logits, embedding rows) built from the loaded
   teacher, over the teacher's bare forward passes (every hidden state and the
   logits) on the same prompts and batches; target <= 1.3.
2. gate: ``pytest`` on the suites representation, embeddings and logits from the
   reference (``--analog-reference``) over the live gate (``--analog-teacher``),
   each in a fresh process without a cache, model loading included; target
   <= 0.6 (the teacher never runs).
3. size: the reference's bytes in all and per gated layer.

    python benchmarks/bench_reference.py [--prompts 128] [--student DIR]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pytest_analog.capture import forward, plan_alignment
from pytest_analog.config import load_config
from pytest_analog.demo import smollm2_gguf
from pytest_analog.layers import gated_layers
from pytest_analog.models import load_model, resolve_source
from pytest_analog.prompts import load_prompts
from pytest_analog.reference import store
from pytest_analog.reference.cli import BuildContext, BuildOptions
from pytest_analog.reference.teacher import TeacherHalf
from pytest_analog import registry

SUITES = ("representation", "embeddings", "logits")


def bare_forward_seconds(teacher, texts, config) -> float:
    """The teacher's forward passes over ``texts`` as the build batches them, nothing else."""
    plan = plan_alignment(teacher.tokenizer, teacher.tokenizer, texts, same_tokenizer=True,
                          max_length=config.prompts.max_length, skip_first=config.positions.skip_first)
    order = sorted(range(len(plan.prompts)), key=lambda i: len(plan.prompts[i].teacher_ids))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), config.batch_size):
            forward(teacher, [plan.prompts[i].teacher_ids for i in order[start : start + config.batch_size]], True)
    return time.perf_counter() - started


def gate_seconds(args: list[str], folder: Path) -> float:
    """Wall time of one gate in a fresh process (no cache), loading included."""
    ini = folder / "pytest.ini"
    ini.write_text("[pytest]\n")
    command = [sys.executable, "-m", "pytest", str(folder), f"-c={ini}", "-q", "-p", "no:cacheprovider",
               f"--analog-suites={','.join(SUITES)}", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"the gate did not run ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--student", required=True, help="the analog (e.g. the demo's, under .analog/analogs/)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    gguf = smollm2_gguf()
    config = load_config(**{"prompts.max_prompts": args.prompts, "benchmarks.limit": args.prompts})
    teacher = load_model(str(gguf), device="cpu", dtype="float32")
    texts = load_prompts(config.prompts.set, config.prompts.max_prompts).texts
    context = BuildContext(config, BuildOptions(SUITES, None, args.prompts), teacher.num_layers)

    bare, build = [], []
    for _ in range(args.repeats):
        bare.append(bare_forward_seconds(teacher, texts, config))
        half = TeacherHalf(context, source=resolve_source(str(gguf)), load=lambda: teacher)
        started = time.perf_counter()
        half.part(registry.runs(registry.built_in())["representation"])
        build.append(time.perf_counter() - started)
    print(f"build: {min(build):.2f} s for the representation part, bare teacher forward {min(bare):.2f} s: "
          f"{min(build) / min(bare):.2f}x (target <= 1.3)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference = store.write(half.reference(), folder / "reference")
        files = [p for p in reference.path.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        part = (reference.path / "representation.safetensors").stat().st_size
        layers = len(gated_layers(config, teacher.num_layers))
        print(f"size: {total / 2**20:.1f} MiB in all, representation tensors {part / 2**20:.1f} MiB "
              f"= {part / layers / 2**20:.2f} MiB per gated layer ({layers} layers, {args.prompts} prompts, "
              f"stored as {next(iter(half.parts['representation'].tensors.values())).dtype})")
        common = [f"--analog-student={args.student}", f"--analog-max-prompts={args.prompts}", "--analog-device=cpu"]
        live = min(gate_seconds([f"--analog-teacher={gguf}", *common], folder) for _ in range(args.repeats))
        cold = min(gate_seconds([f"--analog-reference={reference.path}", *common], folder) for _ in range(args.repeats))
        print(f"gate: from the reference {cold:.1f} s, live {live:.1f} s: {cold / live:.2f}x (target <= 0.6)")


if __name__ == "__main__":
    main()
