"""Activation capture: the layer convention, padding, masks, alignment and pooling."""

import numpy as np
import pytest
import torch

from pytest_analog.capture import capture, plan_alignment
from pytest_analog.errors import AnalogError
from pytest_analog.models import ModelPair, load_model
from pytest_analog.prompts import load_prompts

TEXTS = load_prompts("default", 12).texts


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def other(tiny_other_tok_dir):
    return load_model(str(tiny_other_tok_dir), device="cpu")


def _plain_hidden_states(loaded, ids):
    with torch.no_grad():
        out = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states


def test_rows_are_hidden_states_at_kept_positions_despite_padding(tiny):
    """Layer i is hidden_states[i]; batched, right-padded rows equal an unpadded single-prompt pass."""
    plan = plan_alignment(tiny.tokenizer, tiny.tokenizer, TEXTS, same_tokenizer=True, max_length=64, skip_first=True)
    batches = list(capture(ModelPair(tiny, tiny), plan, batch_size=5, with_logits=False))
    order = sorted(range(len(plan.prompts)), key=lambda i: len(plan.prompts[i].teacher_ids))
    expected = {layer: [] for layer in range(tiny.num_layers + 1)}
    pooled = {layer: [] for layer in range(tiny.num_layers + 1)}
    for i in order:
        prompt = plan.prompts[i]
        states = _plain_hidden_states(tiny, prompt.teacher_ids)
        for layer, h in enumerate(states):
            expected[layer].append(h[0, prompt.teacher_rows])
            pooled[layer].append(h[0, prompt.teacher_pool].mean(0, keepdim=True))
    assert len(states) == tiny.num_layers + 1
    for layer in expected:
        got = torch.cat([b.teacher(layer) for b in batches])
        torch.testing.assert_close(got, torch.cat(expected[layer]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.cat([b.analog(layer) for b in batches]), got)
        torch.testing.assert_close(torch.cat([b.teacher_pooled(layer) for b in batches]), torch.cat(pooled[layer]), atol=1e-5, rtol=1e-4)
    assert [b.row_start for b in batches] == list(np.cumsum([0] + [b.n_rows for b in batches[:-1]]))
    subset = torch.tensor([0, 2])
    torch.testing.assert_close(batches[0].teacher(1, subset), batches[0].teacher(1)[subset])


def test_bos_and_first_position_are_left_out(tiny):
    ids = tiny.tokenizer(TEXTS[0], truncation=True, max_length=64)["input_ids"]
    assert ids[0] == tiny.tokenizer.bos_token_id
    for skip_first in (True, False):
        plan = plan_alignment(tiny.tokenizer, tiny.tokenizer, TEXTS[:1], same_tokenizer=True, max_length=64, skip_first=skip_first)
        rows = plan.prompts[0].teacher_rows
        assert rows[0] == 1  # BOS is special, and it is also the first position (the sink)
        assert list(rows) == list(range(rows[0], len(ids)))
    assert "first position" in plan_alignment(tiny.tokenizer, tiny.tokenizer, TEXTS[:1], same_tokenizer=True, max_length=64, skip_first=True).positions


def test_first_position_without_bos(other):
    for skip_first, first in ((True, 1), (False, 0)):
        plan = plan_alignment(other.tokenizer, other.tokenizer, TEXTS[:1], same_tokenizer=True, max_length=64, skip_first=skip_first)
        assert plan.prompts[0].teacher_rows[0] == first


def test_word_alignment_pairs_last_subtokens_of_the_same_words(tiny, other):
    plan = plan_alignment(tiny.tokenizer, other.tokenizer, TEXTS, same_tokenizer=False, max_length=512, skip_first=True)
    assert plan.mode == "word" and plan.dropped == 0
    for text, prompt in zip(TEXTS, plan.prompts):
        word_ends = set()
        position = 0
        for word in text.split():
            start = text.index(word, position)
            position = start + len(word)
            word_ends.add(position)
        t_off = tiny.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        s_off = other.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        t_ends = [t_off[r][1] for r in prompt.teacher_rows]
        s_ends = [s_off[r][1] for r in prompt.analog_rows]
        assert t_ends == s_ends  # the same word, row by row
        assert set(t_ends) <= word_ends
        assert len(t_ends) >= len(text.split()) - 1  # every word but one at the sink position
        # each row is the last sub-token of its word: the next token starts a new word
        for r in prompt.teacher_rows:
            assert r + 1 == len(t_off) or t_off[r + 1][0] >= t_off[r][1]


def _covered_word_ends(tokenizer, text, max_length):
    """Ends of the whitespace words a truncated tokenization holds whole, written out from its offsets."""
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_special_tokens_mask=True)
    covered = max(end for (start, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]) if not special and end > start)
    ends, position = [], 0
    for word in text.split():
        position = text.index(word, position) + len(word)
        ends.append(position)
    return [e for e in ends if e <= covered]


def test_truncation_at_different_words_keeps_the_shared_word_prefix(tiny, other):
    plan = plan_alignment(tiny.tokenizer, other.tokenizer, TEXTS, same_tokenizer=False, max_length=16, skip_first=True)
    assert plan.dropped == 0 and len(plan.prompts) == len(TEXTS)
    cut_differently = 0
    for text, prompt in zip(TEXTS, plan.prompts):
        t_words, s_words = (_covered_word_ends(tok, text, 16) for tok in (tiny.tokenizer, other.tokenizer))
        cut_differently += len(t_words) != len(s_words)
        shared = t_words[: min(len(t_words), len(s_words))]
        t_off = tiny.tokenizer(text, truncation=True, max_length=16, return_offsets_mapping=True)["offset_mapping"]
        s_off = other.tokenizer(text, truncation=True, max_length=16, return_offsets_mapping=True)["offset_mapping"]
        t_ends = [t_off[r][1] for r in prompt.teacher_rows]
        assert t_ends == [s_off[r][1] for r in prompt.analog_rows]  # the same word, row by row
        assert t_ends == shared[len(shared) - len(t_ends):] and len(t_ends) >= len(shared) - 1  # less the sink's word
        assert prompt.teacher_pool.max() == prompt.teacher_rows[-1] and prompt.analog_pool.max() == prompt.analog_rows[-1]
    assert cut_differently > 0  # the case this test is about occurs


def test_logit_rows_predict_the_next_token(tiny):
    plan = plan_alignment(tiny.tokenizer, tiny.tokenizer, TEXTS[:3], same_tokenizer=True, max_length=64, skip_first=True)
    (batch,) = capture(ModelPair(tiny, tiny), plan, batch_size=8, with_logits=True)
    order = sorted(range(3), key=lambda i: len(plan.prompts[i].teacher_ids))
    targets = [plan.prompts[i].teacher_ids[r + 1] for i in order for r in plan.prompts[i].teacher_rows if r + 1 < len(plan.prompts[i].teacher_ids)]
    assert batch.targets.tolist() == targets
    assert batch.teacher_logits.shape == (len(targets), len(tiny.tokenizer))


def test_word_alignment_needs_offsets(tiny):
    class SlowTokenizer:
        is_fast = False
        name_or_path = "slow-tok"

    with pytest.raises(AnalogError, match="tokenizer slow-tok has no character offsets .*word alignment"):
        plan_alignment(tiny.tokenizer, SlowTokenizer(), TEXTS[:1], same_tokenizer=False, max_length=16, skip_first=True)
