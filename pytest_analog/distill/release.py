"""The output folder as a release candidate in the form the analog policy asks for.

safetensors weights, config and tokenizer (loadable with ``from_pretrained``),
``distill_config.json`` (the exact settings: ``analog-distill --config`` reruns
them), ``training.json`` (what the run did and measured, the held-out curve
included), ``training_curve.png`` and ``README.md``, a model card with the
architecture, size, training setup, data, intended use and licence.

The files are written into a staging folder first and then renamed into the
release one by one, so a kill at any moment leaves only whole files there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pytest_analog import __version__
from pytest_analog.atomic import honour_umask, write_atomic
from pytest_analog.report.plots import training_curve_png
from pytest_analog.suites.compliance.checks import license_of, release_of

CARD = """\
---
license: {licence}
library_name: transformers
tags: [analog, distillation, pytest-analog]
---

# Analog of {name}

A {fraction:.2%} analog of `{teacher}` (weights SHA-256 `{sha256}`), distilled
with pytest-analog {version} (`analog-distill`). Check its fidelity with
`pytest --analog-teacher={teacher} --analog-student=<this folder>`.

## Architecture

{architecture}: {layers} blocks, hidden size {hidden}, {heads} attention heads
({kv_heads} KV heads, head size {head_dim}), MLP width {intermediate}, the teacher's
tokenizer ({vocab} tokens). **{parameters:,} parameters**, {fraction:.2%} of the
teacher's {teacher_parameters:,} (embeddings included).

## Training procedure

- Initialisation: {init_text}
- Loss: {loss_text}
- {steps} optimizer steps of {batch} chunks x {seq_len} tokens ({tokens_seen:,} tokens),
  AdamW, peak learning rate {lr}, seed {seed}; {train_seconds} s of training on {device}
  (mixed precision: {mixed}).
- Held-out KL(teacher ‖ analog) per token, over the teacher's top-{top_k} tokens and the
  rest of its mass at temperature {temperature}: {before:.3f} nats at initialisation,
  **{after:.3f} nats** for these weights, the best of {evaluations} evaluations (every
  {eval_every} steps, step {best_step}; `training.json` and `training_curve.png` hold the curve).

## Training data

{data_text}: {corpus_tokens:,} tokens in chunks of {seq_len}; {train_chunks} chunks
for training, every {stride}th ({heldout_chunks} chunks) held out for the figures above.

## Intended use

Research: a small, open stand-in for the teacher for interpretability,
safety and evaluation work, as in the analog-release proposal (arXiv 2510.14053).
It is not a product model; it inherits the teacher's limitations and biases and
has far less capacity. Measure its fidelity before relying on it.

## Licence

{licence_text}

## Reproduce

`distill_config.json` holds every setting of this run:

```
analog-distill --config distill_config.json --out DIR
```
"""


def teacher_licence(source) -> str | None:
    """The teacher's licence id as the compliance suite reads it (card metadata, LICENSE file, GGUF metadata)."""
    return license_of(release_of(source))[0]


def write(out: Path, model, tokenizer, *, config, shape, keep: list[int], teacher: dict, training: dict,
          staging: Path, licence: str | None = None) -> Path:
    """Write the release folder ``out``: weights, config, tokenizer, settings, training record, curve, model card.

    ``staging``: an empty or absent folder on the same file system, where the files are written first.
    ``licence``: the teacher's licence id, which the analog inherits (None: unknown, the card says so).
    """
    out, staging = Path(out), Path(staging)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left half-written
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    settings = config.to_dict()
    write_atomic(staging / "distill_config.json", json.dumps(settings, indent=2) + "\n")
    record = {"shape": shape.to_dict(), "kept_teacher_blocks": keep, "teacher": teacher, **training}
    write_atomic(staging / "training.json", json.dumps(record, indent=2, default=str) + "\n")
    write_atomic(staging / "training_curve.png", training_curve_png(training["curve"]))
    for path in staging.iterdir():  # save_pretrained writes its weights 0600; a release is for others to read
        honour_umask(path)
    write_atomic(staging / "README.md", card(config, shape, keep, teacher, training, licence))
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)
    staging.rmdir()
    return out


def card(config, shape, keep, teacher: dict, training: dict, licence: str | None = None) -> str:
    """The model card (Markdown with Hugging Face metadata)."""
    if config.init == "pruned":
        init_text = (f"from the teacher: blocks {keep} ({config.keep}), and within them the hidden channels, "
                     f"attention heads and MLP neurons with the highest activation importance on "
                     f"{config.calibration} calibration chunks (Minitron-style width pruning)")
    else:
        init_text = f"random (seed {config.seed})"
    loss_text = {"forward_kl": "forward KL(teacher ‖ analog)", "reverse_kl": "reverse KL(analog ‖ teacher)",
                 "jsd": f"generalised JSD (beta {config.beta})"}[config.loss]
    loss_text += f" at temperature {config.temperature}, scaled by T²"
    if config.ce_weight:
        loss_text += f", plus {config.ce_weight} x cross-entropy on the corpus"
    if config.align != "none":
        loss_text += (f", plus {config.align_weight} x hidden-state alignment ({config.align}) through learned linear "
                      f"projections, analog layer -> teacher layer {training['align_map']}")
    data_text = _corpus_text(config.corpus)
    if config.generated_tokens is not None:
        data_text = (f"Text the teacher wrote itself: {config.generated_tokens:,} tokens sampled at temperature "
                     f"{config.gen_temperature}, top-p {config.gen_top_p}, continuing the seeds in fixtures/corpus/seeds.txt "
                     f"(written for pytest-analog, none from the gate's prompts) for up to {config.gen_tokens} tokens each"
                     + (f", with {_corpus_text(config.mix)[0].lower()}{_corpus_text(config.mix)[1:]}" if config.mix != "none" else ""))
    licence_text = (f"The teacher's licence ({licence}) applies to these weights, which derive from it." if licence else
                    "The teacher's licence applies to these weights, which derive from it; pytest-analog could not read "
                    "it from the teacher's files, so check it before release.")
    return CARD.format(
        teacher=teacher.get("id"), name=Path(str(teacher.get("id"))).name, sha256=teacher.get("sha256"), fraction=shape.fraction, version=__version__, architecture=teacher.get("architecture"),
        vocab=teacher["tokenizer"]["vocab_size"], teacher_parameters=teacher["parameters"], init_text=init_text,
        loss_text=loss_text, batch=config.batch_size * config.grad_accum, seq_len=config.seq_len, lr=config.lr,
        seed=config.seed, device=training["device"], mixed=training["mixed_precision"], top_k=config.top_k,
        temperature=config.temperature, before=training["heldout_kl_before"], after=training["heldout_kl_after"],
        evaluations=len(training["curve"]), eval_every=config.eval_every, best_step=training["best_step"],
        data_text=data_text, stride=max(2, round(1 / config.heldout)), licence_text=licence_text,
        licence=licence or "other",
        **{k: v for k, v in shape.to_dict().items() if k != "fraction"}, **{k: training[k] for k in (
            "steps", "tokens_seen", "train_seconds", "corpus_tokens", "train_chunks", "heldout_chunks")},
    )


def _corpus_text(corpus: str) -> str:
    if corpus == "builtin":
        return "The prose corpus shipped with pytest-analog (fixtures/corpus, written for the project, Apache-2.0)"
    return f"Corpus `{corpus}`"
