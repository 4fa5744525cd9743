"""Built-in distillation of the real SmolLM2-135M-Instruct on the CPU: a short run beats a random student."""

import json

import numpy as np
import pytest

from pytest_analog.suites.compliance import checks as compliance
from pytest_analog.config import load_config
from pytest_analog.distill import DistillConfig, distill
from pytest_analog.distill.data import read_texts
from pytest_analog.distill.student import random_student
from pytest_analog.suites.representation.analog import measure
from pytest_analog.suites.representation.teacher import teacher_part
from pytest_analog.models import ModelPair, load_model, resolve_source
from pytest_analog.prompts import load_prompts

pytestmark = pytest.mark.slow


def test_short_distillation_beats_a_random_student_of_the_same_size(smollm2_gguf, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(read_texts("builtin")[:5]))  # about 3,000 tokens: a lean run
    config = DistillConfig(teacher=str(smollm2_gguf), fraction=0.05, corpus=str(corpus), max_steps=20,
                           calibration=8, device="cpu")
    out = distill(config, tmp_path / "analog", progress=False)
    record = json.loads((out / "training.json").read_text())
    assert abs(record["shape"]["fraction"] / 0.05 - 1) <= 0.05
    # a release candidate the compliance suite accepts: the teacher's licence is read from its GGUF metadata
    release, rules = compliance.release_of(resolve_source(str(out))), load_config().compliance
    checks = [compliance.safetensors_weights(resolve_source(str(out))), compliance.model_card(release, rules.model_card.sections),
              compliance.license_check(release, rules.license.allowed),
              compliance.training_code(release, rules.training_code.files, rules.training_code.sections)]
    assert all(c.passed for c in checks), [c.message for c in checks]

    teacher = load_model(str(smollm2_gguf), device="cpu", dtype="float32")
    analog = load_model(str(out), device="cpu", dtype="float32")
    random_dir = tmp_path / "random"
    random_student(analog.model.config, seed=1).save_pretrained(random_dir)
    analog.tokenizer.save_pretrained(random_dir)
    random = load_model(str(random_dir), device="cpu", dtype="float32")
    assert random.info["parameters"] == analog.info["parameters"]

    fidelity = load_config(**{"prompts.max_prompts": 16})
    prompts = load_prompts("default", max_prompts=16)  # the gate's own prompts: text the analog never trained on
    part = teacher_part(teacher, fidelity, prompts=prompts)
    ours, theirs = (measure(ModelPair(teacher, student), part, prompts, fidelity) for student in (analog, random))
    kl = (ours.logits["kl"], theirs.logits["kl"])
    cka = (np.mean(list(ours.cka.values())), np.mean(list(theirs.cka.values())))
    print(f"held-out KL analog {kl[0]:.3f} random {kl[1]:.3f}; mean CKA analog {cka[0]:.3f} random {cka[1]:.3f}")
    assert kl[0] < 0.8 * kl[1]
    assert cka[0] > cka[1] + 0.1
