"""The representation run's teacher half on the real SmolLM2-135M-Instruct: its own reference, half precision."""

import pytest

from pytest_analog.config import load_config
from pytest_analog.controls import layer_pruned_copy
from pytest_analog.models import LoadedModel, ModelPair, load_model
from pytest_analog.prompts import load_prompts
from pytest_analog.reference import store
from pytest_analog.suites.representation.teacher import teacher_part
from pytest_analog.suites.representation.analog import measure

pytestmark = pytest.mark.slow
PROMPTS = load_prompts("default", 32)
SETTINGS = {"prompts.max_prompts": 32, "chance.resamples": 0}


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_model(str(smollm2_gguf), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def parts(smollm2):
    """The teacher's part stored as computed (float32) and in float16."""
    return {dtype: teacher_part(smollm2, load_config(**{**SETTINGS, "reference.dtype": dtype}), prompts=PROMPTS)
            for dtype in ("model", "float16")}


def test_smollm2_against_its_own_reference_scores_one_at_every_gated_layer(smollm2, parts, tmp_path):
    """The reference written and read back, the teacher never loaded on the gate's side."""
    store.write(store.build(smollm2.info, {"representation": parts["model"]}, store.tokenizer_files(smollm2.tokenizer), {}), tmp_path / "ref")
    reference = store.load(tmp_path / "ref")
    teacher = LoadedModel(None, reference.teacher_tokenizer(), reference.teacher, None)
    m = measure(ModelPair(teacher, smollm2), reference.part("representation"), PROMPTS, load_config(**SETTINGS))
    assert m.teacher_layers == [0, 4, 8, 11, 15, 19, 22, 26, 30]
    assert min(m.cka.values()) >= 0.999, m.cka
    assert m.logits["kl"] < 1e-6 and m.logits["top1_agreement"] == 1.0 and m.logits["perplexity_ratio"] == pytest.approx(1.0)
    assert m.embedding_geometry == pytest.approx(1.0) and m.unembedding_geometry == pytest.approx(1.0)


def test_half_precision_halves_the_reference_and_moves_cka_by_less_than_a_hundredth(smollm2, parts):
    hidden = {dtype: sum(t.nbytes for name, t in part.tensors.items() if name.startswith("hidden."))
              for dtype, part in parts.items()}
    assert hidden["float16"] * 2 == hidden["model"]
    keep = [i for i in range(30) if i % 4 != 3]  # 23 of 30 blocks: CKA well inside (0, 1) in the middle
    pruned = LoadedModel(layer_pruned_copy(smollm2.model, keep), smollm2.tokenizer,
                         {**smollm2.info, "num_layers": len(keep)}, smollm2.source)
    config = load_config(**SETTINGS)
    cka = {dtype: measure(ModelPair(smollm2, pruned), part, PROMPTS, config).cka for dtype, part in parts.items()}
    assert min(cka["model"].values()) < 0.9  # a layer well below one, where a rounding error would show
    shift = {i: abs(cka["float16"][i] - cka["model"][i]) for i in cka["model"]}
    print(f"float16 reference: largest CKA shift {max(shift.values()):.2e}; CKA {cka['model']}")
    assert max(shift.values()) < 0.01, shift
