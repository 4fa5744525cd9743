"""A model's layers, each concept once: the relative-depth maps, the transformer blocks, padding and the forward pass."""

import copy
from types import SimpleNamespace

import pytest
import torch

from pytest_analog.capture import forward, padded
from pytest_analog.distill.train import align_map
from pytest_analog.errors import AnalogError
from pytest_analog.layers import layer_map, proportional_map, same_depth
from pytest_analog.models import decoder_blocks, replace_decoder_blocks
from pytest_analog.suites.steering.layers import steering_layers
from pytest_analog.controls import layer_pruned_copy
from tests.conftest import tiny_llama

DEPTHS = range(1, 25)


def _written_out(layer: int, depth: int, other_depth: int) -> int:
    """Nearest layer at the same relative depth, a tie to the even one, in exact integer arithmetic."""
    whole, rest = divmod(layer * other_depth, depth)
    if 2 * rest != depth:
        return whole + (2 * rest > depth)
    return whole + whole % 2


def test_same_depth_is_the_nearest_layer_with_ties_to_even():
    for depth in DEPTHS:
        for other in DEPTHS:
            got = [same_depth(i, depth, other) for i in range(depth + 1)]
            assert got == [_written_out(i, depth, other) for i in range(depth + 1)]
            assert got[0] == 0 and got[-1] == other and got == sorted(got)  # ends to ends, in order
    assert same_depth(1, 4, 2) == 0 and same_depth(3, 4, 2) == 2  # ties: 0.5 -> 0 and 1.5 -> 2


def test_the_three_relative_depth_maps_share_one_rule():
    """Representation, steering and distillation map layers as before the merge: all three rounded a tie to even."""
    config = SimpleNamespace(layers=SimpleNamespace(map="proportional"))
    proportional = SimpleNamespace(teacher_layers=None, analog_layers="proportional")
    for teacher in DEPTHS:
        for student in DEPTHS:
            layers = list(range(teacher + 1))
            expected = {i: _written_out(i, teacher, student) for i in layers}
            assert layer_map(config, layers, teacher, student) == expected
            steerable = SimpleNamespace(**{**vars(proportional), "teacher_layers": layers[:-1]})
            assert steering_layers(steerable, teacher, student) == {i: max(1, expected[i]) for i in layers[:-1]}
            assert align_map(teacher, student) == {j: _written_out(j, student, teacher) for j in range(1, student + 1)}


def test_steering_never_maps_to_the_embedding_output_unless_named():
    assert proportional_map([0, 1, 2], 30, 2, lowest=1) == {0: 1, 1: 1, 2: 1}
    named = SimpleNamespace(teacher_layers=[1], analog_layers={1: 0})
    assert steering_layers(named, 30, 2) == {1: 0}


@pytest.fixture(scope="module")
def llama(bos_tokenizer):
    return tiny_llama(bos_tokenizer, layers=4)


def test_decoder_blocks_finds_and_replaces_the_block_list(llama):
    blocks = decoder_blocks(llama)
    assert blocks is llama.model.layers and len(blocks) == 4
    assert decoder_blocks(SimpleNamespace(model=llama)) is blocks  # a LoadedModel
    pruned = layer_pruned_copy(llama, [0, 3])
    assert len(decoder_blocks(pruned)) == 2 and [b.self_attn.layer_idx for b in decoder_blocks(pruned)] == [0, 1]
    reversed_copy = copy.deepcopy(llama)
    replace_decoder_blocks(reversed_copy, list(decoder_blocks(reversed_copy))[::-1])
    assert isinstance(reversed_copy.model.layers, torch.nn.ModuleList)
    assert torch.equal(reversed_copy.model.layers[0].mlp.up_proj.weight, llama.model.layers[3].mlp.up_proj.weight)


def test_decoder_blocks_error_is_one_line(llama):
    llama.config.num_hidden_layers = 7
    try:
        with pytest.raises(AnalogError, match="cannot find the 7 transformer blocks of LlamaForCausalLM") as error:
            decoder_blocks(llama)
    finally:
        llama.config.num_hidden_layers = 4
    assert "\n" not in str(error.value)


def test_padded_right_and_left():
    model = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=9))
    ids, mask, positions = padded(model, [[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    ids, mask, positions = padded(model, [[1, 2, 3], [4]], left=True)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    no_pad = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=None))
    assert padded(no_pad, [[5], [5, 6]])[0].tolist() == [[5, 0], [5, 6]]


def test_forward_pads_without_changing_a_sequence(bos_tokenizer, llama):
    loaded = SimpleNamespace(model=llama, tokenizer=bos_tokenizer, input_device=torch.device("cpu"))
    short, long = [1, 5, 6], [1, 7, 8, 9, 10]
    with torch.inference_mode():
        alone = forward(loaded, [short], with_logits=True)
        batched = forward(loaded, [long, short], with_logits=True)
    assert len(batched.hidden_states) == 5 and batched.logits.shape[1] == len(long)
    for layer in range(5):
        torch.testing.assert_close(batched.hidden_states[layer][1, :3], alone.hidden_states[layer][0])
