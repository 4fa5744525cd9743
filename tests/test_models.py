"""The model loader: sources, safety defaults, records, and one-line errors."""

import shutil

import pytest
import torch

from pytest_analog.errors import AnalogError
from pytest_analog.models import load_model, resolve_device, resolve_source, sha256_files, tokenizer_sha256
from tests.conftest import save_model, tiny_llama


def test_loads_a_local_directory_and_records_it(tiny_dir, tmp_path):
    loaded = load_model(str(tiny_dir), device="cpu", cache_dir=tmp_path)
    info = loaded.info
    assert info["source"] == "directory" and info["architecture"] == "LlamaForCausalLM"
    assert info["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert info["num_layers"] == 3 and info["hidden_size"] == 32 and info["dtype"] == "float32"
    assert len(info["sha256"]) == 64 and info["tokenizer"]["vocab_size"] == len(loaded.tokenizer)
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    assert (tmp_path / "hashes.json").is_file()


def test_weight_hash_follows_content(tiny_dir, tmp_path, bos_tokenizer):
    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    assert sha256_files(resolve_source(str(copy)).weight_files()) == sha256_files(resolve_source(str(tiny_dir)).weight_files())
    model = load_model(str(copy), device="cpu").model
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    save_model(model, bos_tokenizer, copy)
    assert sha256_files(resolve_source(str(copy)).weight_files()) != sha256_files(resolve_source(str(tiny_dir)).weight_files())


def test_tokenizer_identity(bos_tokenizer, other_tokenizer):
    assert tokenizer_sha256(bos_tokenizer) == tokenizer_sha256(bos_tokenizer)
    assert tokenizer_sha256(bos_tokenizer) != tokenizer_sha256(other_tokenizer)


def test_missing_path(tmp_path):
    with pytest.raises(AnalogError, match=r"model path .*nope does not exist; give a model directory"):
        resolve_source(str(tmp_path / "nope"))


def test_file_that_is_not_gguf(tmp_path):
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(AnalogError, match="is not a .gguf file"):
        resolve_source(str(tmp_path / "weights.txt"))


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(AnalogError, match="is not a model directory: it has no config.json and no .gguf file"):
        resolve_source(str(tmp_path))


def test_directory_with_two_gguf_files(tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(AnalogError, match=r"several .gguf files \(a.gguf, b.gguf\); name one file"):
        resolve_source(str(tmp_path))


def test_pickle_weights_refused_unless_allowed(tmp_path, bos_tokenizer):
    model = tiny_llama(bos_tokenizer)
    path = save_model(model, bos_tokenizer, tmp_path / "pickled")
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(AnalogError, match=r"only pickle weights \(pytorch_model.bin\).*--analog-allow-pickle"):
        load_model(str(path), device="cpu")
    loaded = load_model(str(path), device="cpu", allow_pickle=True)
    assert torch.equal(loaded.model.lm_head.weight, model.lm_head.weight)


def test_encoder_only_model_is_refused(tmp_path, bos_tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=len(bos_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    save_model(BertForMaskedLM(config), bos_tokenizer, tmp_path / "bert")
    with pytest.raises(AnalogError, match=r"is not a decoder-only causal language model \(BertForMaskedLM\)"):
        load_model(str(tmp_path / "bert"), device="cpu")


def test_remote_code_is_not_run_by_default(tmp_path, tiny_dir):
    import json

    path = shutil.copytree(tiny_dir, tmp_path / "custom")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="mystery-net", auto_map={"AutoConfig": "modeling_mystery.MysteryConfig"})
    (path / "config.json").write_text(json.dumps(config))
    (path / "modeling_mystery.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(AnalogError, match="needs custom code from its repository.*--analog-trust-remote-code"):
        load_model(str(path), device="cpu")


def test_unreachable_hub_id_is_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AnalogError, match=r"could not fetch 'someorg/not-a-model' from the Hugging Face hub") as info:
        resolve_source("someorg/not-a-model")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_device_without_cuda():
    with pytest.raises(AnalogError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_placement_and_bf16(tiny_dir):
    loaded = load_model(str(tiny_dir), device="auto")
    assert loaded.info["dtype"] == "bfloat16" and loaded.input_device.type == "cuda"


@pytest.mark.parametrize(("allow_pickle", "trust_remote_code"), [(False, False), (True, True)])
def test_hub_download_fetches_no_code_or_pickles_by_default(monkeypatch, tmp_path, tiny_dir, allow_pickle, trust_remote_code):
    import huggingface_hub

    asked = {}

    def fake_snapshot_download(repo_id, allow_patterns=None, **kwargs):
        asked.update(repo_id=repo_id, patterns=allow_patterns)
        return str(tiny_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = resolve_source("someorg/model", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    assert source.kind == "hub" and source.directory == tiny_dir and asked["repo_id"] == "someorg/model"
    assert {"*.json", "*.safetensors"} <= set(asked["patterns"])
    assert ("*.py" in asked["patterns"]) is trust_remote_code
    assert ("*.bin" in asked["patterns"]) is allow_pickle
