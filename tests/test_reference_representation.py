"""The representation run's two halves: the teacher's part (`suites.representation.teacher.teacher_part`) and the
analog half (`representation.measure`), on tiny models."""

import json

import numpy as np
import pytest
import torch

from pytest_analog.config import load_config
from pytest_analog.controls import control_model
from pytest_analog.errors import AnalogError
from pytest_analog.metrics import logit_fidelity
from pytest_analog.models import LoadedModel, ModelPair, load_model
from pytest_analog.prompts import load_prompts
from pytest_analog.part import Part
from pytest_analog.reference import store
from pytest_analog.suites.representation.teacher import teacher_part
from pytest_analog.suites.representation.analog import measure
from tests.test_metrics_cka import ref_linear_cka

PROMPTS = load_prompts("default", 16)
SETTINGS = {"prompts.max_prompts": 16, "layers.teacher": "all", "chance.resamples": 20}


@pytest.fixture(scope="module")
def teacher(tiny_dir):
    return load_model(str(tiny_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module", params=["same_tokenizer", "other_tokenizer"])
def analog(request, tiny_random_dir, tiny_other_tok_dir):
    path = tiny_random_dir if request.param == "same_tokenizer" else tiny_other_tok_dir
    return load_model(str(path), device="cpu", dtype="float32")


def values(m) -> str:
    """Every value of a `Measurements` but its timing, as canonical JSON (NaN equal to NaN)."""
    data = m.to_dict()
    data["capture"].pop("seconds")
    return json.dumps(data, sort_keys=True, default=str)


def from_reference(folder) -> tuple[LoadedModel, Part]:
    """The teacher as the gate sees it in reference mode (no model, no files) and its part."""
    reference = store.load(folder)
    return LoadedModel(None, reference.teacher_tokenizer(), reference.teacher, None), reference.part("representation")


def test_a_written_and_read_part_gives_the_live_values_bitwise(tmp_path, teacher, analog):
    config = load_config(**SETTINGS)
    part = teacher_part(teacher, config, prompts=PROMPTS)
    store.write(store.build(teacher.info, {"representation": part}, store.tokenizer_files(teacher.tokenizer), {}), tmp_path / "ref")
    reference_teacher, read = from_reference(tmp_path / "ref")
    control = control_model(analog, "random", config.chance.seed)
    live = measure(ModelPair(teacher, analog), part, PROMPTS, config, control=control)
    again = measure(ModelPair(reference_teacher, analog), read, PROMPTS, config, control=control)
    assert values(live) == values(again)
    assert read.tensors["hidden.1"].dtype == torch.float32 and torch.equal(read.tensors["hidden.1"], part.tensors["hidden.1"])
    assert live.cka[1] < 0.99 and live.mutual_knn[1] < 0.99  # two different models: nothing trivially equal


def kept_rows(model, text: str, max_length: int):
    """Each layer's hidden states at every non-special position but the first, the model alone on one prompt."""
    enc = model.tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    keep = ~np.asarray(enc["special_tokens_mask"], dtype=bool)
    keep[0] = False
    with torch.inference_mode():
        out = model.model(input_ids=torch.tensor([enc["input_ids"]]), output_hidden_states=True)
    return [h[0, keep].double().numpy() for h in out.hidden_states], out.logits[0].double().numpy(), enc["input_ids"], keep


def test_values_match_an_independent_computation_prompt_by_prompt(tiny_dir, tiny_random_dir):
    """Same tokenizer: CKA at every layer pair and the logit fidelity, against each model run on each prompt
    alone (no batching, no padding) and numpy; with top_k = the vocabulary the KL is the exact one."""
    teacher, analog = (load_model(str(p), device="cpu", dtype="float32") for p in (tiny_dir, tiny_random_dir))
    config = load_config(**{**SETTINGS, "chance.resamples": 0, "logits.top_k": len(teacher.tokenizer)})
    m = measure(ModelPair(teacher, analog), teacher_part(teacher, config, prompts=PROMPTS), PROMPTS, config)
    rows = {"teacher": [], "analog": []}
    logits = {"teacher": [], "analog": []}
    targets = []
    for text in PROMPTS.texts:
        for name, model in (("teacher", teacher), ("analog", analog)):
            hidden, z, ids, keep = kept_rows(model, text, config.prompts.max_length)
            rows[name].append(hidden)
            nexts = np.flatnonzero(keep)[np.flatnonzero(keep) + 1 < len(ids)]
            logits[name].append(z[nexts])
        targets.extend(np.asarray(ids)[nexts + 1])
    for i in m.teacher_layers:
        x = np.concatenate([r[i] for r in rows["teacher"]])
        y = np.concatenate([r[m.mapped[i]] for r in rows["analog"]])
        assert m.cka[i] == pytest.approx(ref_linear_cka(x, y, debiased=True), abs=1e-6), i
    exact = logit_fidelity(np.concatenate(logits["teacher"]), np.concatenate(logits["analog"]), np.asarray(targets))
    assert m.logits == pytest.approx(exact, rel=1e-5)
    assert m.logits["kl"] > 1e-3  # tiny random models predict nearly uniformly, yet differ


def test_the_default_top_k_bounds_the_kl_from_below_and_keeps_top1_and_perplexity(tiny_dir, tiny_random_dir):
    teacher, analog = (load_model(str(p), device="cpu", dtype="float32") for p in (tiny_dir, tiny_random_dir))
    pair = ModelPair(teacher, analog)
    measured = {}
    for k in (8, len(teacher.tokenizer)):
        config = load_config(**{**SETTINGS, "chance.resamples": 0, "logits.top_k": k})
        measured[k] = measure(pair, teacher_part(teacher, config, prompts=PROMPTS), PROMPTS, config).logits
    top, exact = measured.values()
    assert top["kl"] < exact["kl"]  # a lower bound, and a strict one at k = 8 of 400
    for key in ("top1_agreement", "perplexity_teacher", "perplexity_analog", "perplexity_ratio", "n_tokens"):
        assert top[key] == pytest.approx(exact[key], rel=1e-12), key


def test_a_part_of_other_token_ids_is_refused_in_one_line(teacher, tiny_random_dir):
    analog = load_model(str(tiny_random_dir), device="cpu", dtype="float32")
    config = load_config(**SETTINGS)
    short = teacher_part(teacher, load_config(**{**SETTINGS, "prompts.max_length": 8}), prompts=PROMPTS)
    with pytest.raises(AnalogError, match=r"^the teacher reference's token ids of prompt 0 differ from its tokenizer's "
                                          r"tokenization here \(8 vs \d+ tokens\): it was built with another tokenizer "
                                          r"or prompts.max_length$"):
        measure(ModelPair(teacher, analog), short, PROMPTS, config)
    part = teacher_part(teacher, config, prompts=PROMPTS)
    part.tensors["tokens"][5] += 1  # one token id changed
    with pytest.raises(AnalogError, match="token ids of prompt 0 differ"):
        measure(ModelPair(teacher, analog), part, PROMPTS, config)
    with pytest.raises(AnalogError, match=r"holds 16 prompts at layers \[0, 1, 2, 3\]; this run compares 15 prompts"):
        measure(ModelPair(teacher, analog), part, load_prompts("default", 15), config)


def test_a_part_without_logits_holds_the_same_rows_and_serves_a_run_without_logits(teacher, tiny_random_dir):
    config = load_config(**SETTINGS)
    full = teacher_part(teacher, config, prompts=PROMPTS)
    bare = teacher_part(teacher, config, prompts=PROMPTS, with_logits=False)
    assert sorted(n for n in full.tensors if n.startswith("logits.")) == ["logits.ids", "logits.logprobs", "logits.tail", "logits.target"]
    assert not [n for n in bare.tensors if n.startswith("logits.")]
    assert sorted(bare.tensors) == sorted(n for n in full.tensors if not n.startswith("logits."))
    for name, tensor in bare.tensors.items():
        assert torch.equal(tensor, full.tensors[name]), name
    pair = ModelPair(teacher, load_model(str(tiny_random_dir), device="cpu", dtype="float32"))
    without = [measure(pair, part, PROMPTS, config, with_logits=False) for part in (bare, full)]
    assert values(without[0]) == values(without[1]) and without[0].logits is None
    with pytest.raises(AnalogError, match=r"^the teacher's representation part holds no logits"):
        measure(pair, bare, PROMPTS, config)


def test_half_precision_storage_halves_the_hidden_states_and_refuses_overflow(teacher):
    full = teacher_part(teacher, load_config(**SETTINGS), prompts=PROMPTS)
    half = teacher_part(teacher, load_config(**{**SETTINGS, "reference.dtype": "float16"}), prompts=PROMPTS)
    for name, tensor in full.tensors.items():
        stored = half.tensors[name]
        if name.startswith(("hidden.", "matrix.", "embedding", "unembedding")) and name != "matrix.rows":
            assert stored.dtype == torch.float16 and stored.nbytes * 2 == tensor.nbytes, name
            torch.testing.assert_close(stored.float(), tensor, rtol=1e-3, atol=1e-3)
        else:  # token ids, offsets and the logits' top-k stay as they are
            assert torch.equal(stored, tensor), name
    assert half.meta == {**full.meta, "dtype": "float16"}
    hook = teacher.model.get_input_embeddings().register_forward_hook(lambda module, args, out: out * 1e8)
    try:
        with pytest.raises(AnalogError, match=r"^reference.dtype float16 cannot hold the teacher's hidden states "
                                              r"\(largest \|value\| .*\); use bfloat16 or float32$"):
            teacher_part(teacher, load_config(**{**SETTINGS, "reference.dtype": "float16"}), prompts=PROMPTS)
    finally:
        hook.remove()
