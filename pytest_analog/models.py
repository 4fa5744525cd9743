"""Model pairs: one loader for teacher and analog, and what is recorded of each.

A model reference is a hub id, a local directory, or a single ``.gguf`` file.
By default nothing executes from a model repository: ``trust_remote_code`` is
off and pickle checkpoints (``*.bin``, ``*.pt``) are refused; only safetensors
and GGUF weights load.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_analog import cache
from pytest_analog.atomic import write_atomic
from pytest_analog.errors import AnalogError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ModelSource:
    """Where a model's files are: a local directory and, for GGUF, the file in it."""

    ref: str
    kind: str  # "hub", "directory" or "gguf"
    directory: Path
    gguf_file: str | None = None

    def files(self) -> list[Path]:
        """Every file that makes up the model: weights, config and tokenizer."""
        if self.gguf_file:
            return [self.directory / self.gguf_file]
        return sorted(p for p in self.directory.iterdir() if p.is_file() and not p.name.startswith("."))

    def weight_files(self) -> list[Path]:
        if self.gguf_file:
            return [self.directory / self.gguf_file]
        return sorted(p for p in self.directory.iterdir() if p.suffix in (".safetensors", *PICKLE_SUFFIXES))


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer and the record of what it is."""

    model: Any
    tokenizer: Any
    info: dict[str, Any]
    source: ModelSource

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks; ``hidden_states`` has one more entry."""
        return self.info["num_layers"]

    @property
    def input_device(self):
        return self.model.get_input_embeddings().weight.device


@dataclass
class ModelPair:
    """The teacher and its analog."""

    teacher: LoadedModel
    analog: LoadedModel

    @property
    def same_tokenizer(self) -> bool:
        return self.teacher.info["tokenizer"]["sha256"] == self.analog.info["tokenizer"]["sha256"]

    @property
    def parameter_fraction(self) -> float:
        return parameter_fraction({"teacher": self.teacher.info, "analog": self.analog.info})


def parameter_fraction(infos: dict[str, Any]) -> float:
    """The analog's parameters / the teacher's, from the models' records (``{"teacher": info, "analog": info}``)."""
    return infos["analog"]["parameters"] / infos["teacher"]["parameters"]


def resolve_source(ref: str, *, allow_pickle: bool = False, trust_remote_code: bool = False) -> ModelSource:
    """Find the files of ``ref``, downloading a hub id into the local hub cache.

    Raises:
        AnalogError: the path does not exist, is not a model, holds only pickle
            weights without ``allow_pickle``, or the hub cannot be reached.
    """
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise AnalogError(f"model file {ref} is not a .gguf file; give a model directory, a .gguf file or a hub id")
        source = ModelSource(ref, "gguf", path.parent.resolve(), path.name)
    elif path.is_dir():
        source = _directory_source(ref, path)
    elif _HUB_ID.match(ref) and not ref.startswith((".", "~")):
        source = ModelSource(ref, "hub", _download(ref, allow_pickle, trust_remote_code))
    else:
        raise AnalogError(f"model path {ref} does not exist; give a model directory, a .gguf file or a hub id")
    _check_weights(source, allow_pickle)
    return source


def _directory_source(ref: str, path: Path) -> ModelSource:
    if (path / "config.json").is_file():
        return ModelSource(ref, "directory", path.resolve())
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(ref, "gguf", path.resolve(), ggufs[0].name)
    if ggufs:
        names = ", ".join(p.name for p in ggufs)
        raise AnalogError(f"model directory {ref} holds several .gguf files ({names}); name one file instead")
    raise AnalogError(f"{ref} is not a model directory: it has no config.json and no .gguf file")


def _download(repo_id: str, allow_pickle: bool, trust_remote_code: bool) -> Path:
    """Fetch what loading needs, nothing more: no code unless trusted, no pickles unless allowed."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt"]
    patterns += ["*.py"] if trust_remote_code else []
    patterns += [f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else []
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated repo: all say the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnalogError(
            f"could not fetch '{repo_id}' from the Hugging Face hub ({reason}); "
            "check the id and the network, or give a local directory"
        ) from None


def _check_weights(source: ModelSource, allow_pickle: bool) -> None:
    files = source.weight_files()
    if not files:
        raise AnalogError(f"{source.ref} has no weight files (*.safetensors or *.gguf)")
    pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickles and not allow_pickle and len(pickles) == len(files):
        raise AnalogError(
            f"{source.ref} has only pickle weights ({', '.join(pickles)}), which can execute code when loaded; "
            "convert them to safetensors or pass --analog-allow-pickle if you trust them"
        )


def check_files(source: ModelSource, *, trust_remote_code: bool = False) -> None:
    """Check what can be checked without loading weights: each safetensors header (its tensor
    table must cover the file exactly) and whether the tokenizer needs custom code.

    Raises:
        AnalogError: a damaged safetensors file, or a tokenizer that needs code that is not trusted.
    """
    from safetensors import SafetensorError, safe_open

    for path in source.weight_files():
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except (SafetensorError, OSError) as exc:
                raise AnalogError(
                    f"{source.ref}: {path.name} is not a readable safetensors file ({' '.join(str(exc).split())}); "
                    "save or download the weights again"
                ) from None
    if not trust_remote_code and not source.gguf_file and _tokenizer_needs_code(source.directory):
        raise AnalogError(
            f"{source.ref}'s tokenizer needs custom code from its repository (auto_map in tokenizer_config.json); "
            "pytest-analog runs none by default. Pass --analog-trust-remote-code if you trust it"
        )


def check_vocab(source: ModelSource, config, *, trust_remote_code: bool = False) -> None:
    """Refuse a tokenizer with more tokens than the model has embedding rows (config ``vocab_size``):
    its larger ids index past the embedding matrix, an IndexError in every test.

    Loads the tokenizer only (a GGUF file holds the tokenizer its config was read from).

    Raises:
        AnalogError: naming the model, both sizes and what to do; or when the tokenizer cannot be loaded.
    """
    if source.gguf_file:
        return
    from transformers import AutoTokenizer

    try:
        tokens = len(AutoTokenizer.from_pretrained(source.directory, trust_remote_code=trust_remote_code))
    except Exception as exc:
        raise AnalogError(_load_failure(source.ref, exc, trust_remote_code)) from None
    rows = config.get_text_config().vocab_size
    if isinstance(rows, int) and tokens > rows:
        raise AnalogError(
            f"{source.ref}: its tokenizer has {tokens} tokens but its config's vocab_size is {rows} embedding rows; "
            f"token ids {rows} and up would index past the embeddings. Give the tokenizer the model was trained "
            "with, or resize the embeddings (model.resize_token_embeddings) and save the model again"
        )


def _tokenizer_needs_code(directory: Path) -> bool:
    """True when tokenizer_config.json maps AutoTokenizer to repository code and names no transformers class,
    which is when transformers refuses to load it without ``trust_remote_code``."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    config = _read_json(directory / "tokenizer_config.json")
    auto_map = config.get("auto_map")
    remote = auto_map if isinstance(auto_map, (list, tuple)) else (auto_map or {}).get("AutoTokenizer")
    if not remote:
        return False
    name = config.get("tokenizer_class")
    return not (isinstance(name, str) and (tokenizer_class_from_name(name) or tokenizer_class_from_name(f"{name}Fast")))


def check_finite(loaded: LoadedModel) -> None:
    """Raise when a parameter holds NaN or infinite values, naming the first such tensor.

    Raises:
        AnalogError: naming the model and the first parameter (in module order) that is not finite.
    """
    import torch

    for name, param in loaded.model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise AnalogError(
                f"{loaded.source.ref} has NaN or infinite weights, first in {name}; "
                "every metric would be NaN: fix or re-export the weights"
            )


def decoder_blocks(model):
    """The transformer blocks of a `LoadedModel` or a transformers model: its module list as long as the
    config's ``num_hidden_layers``."""
    owner, name = _block_list(model)
    return getattr(owner, name)


def replace_decoder_blocks(model, blocks) -> None:
    """Put ``blocks`` in place of the model's transformer blocks (setting the config's layer count is the caller's)."""
    import torch

    owner, name = _block_list(model)
    setattr(owner, name, torch.nn.ModuleList(blocks))


def _block_list(model):
    """(module holding the block list, its attribute name)."""
    import torch

    model = model if isinstance(model, torch.nn.Module) else model.model
    n = model.config.get_text_config().num_hidden_layers
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            owner, _, name = path.rpartition(".")
            return model.get_submodule(owner), name
    raise AnalogError(f"cannot find the {n} transformer blocks of {type(model).__name__}: it has no module list of that length")


def sha256_files(files: list[Path], cache_dir: Path | None = None) -> str:
    """SHA-256 over the names and contents of ``files`` (see `combine_sha256`).

    Per-file digests are remembered in ``cache_dir/hashes.json`` (see `file_sha256s`),
    so a large teacher is read once.
    """
    return combine_sha256((path.name, digest) for path, digest in file_sha256s(files, cache_dir).items())


def file_sha256s(files: list[Path], cache_dir: Path | None = None) -> dict[Path, str]:
    """The hex SHA-256 of each file's contents (as ``sha256sum`` prints it), in the order given.

    A remembered digest is reused only while the file's size, mtime, ctime,
    inode and device all match (`_stamp`). Size and mtime alone can be kept by
    new weights (``rsync -t``, tar and container layers restore the mtime);
    the ctime cannot: every write or rename sets it to the current time, and
    no call sets it back.
    """
    memo_path = cache_dir / "hashes.json" if cache_dir else None
    memo = _read_json(memo_path) if memo_path else {}
    digests = {}
    changed = False
    for path in files:
        key, stamp = str(path.resolve()), _stamp(path)
        entry = memo.get(key)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str)):
            entry = memo[key] = {"stamp": stamp, "sha256": _sha256(path)}
            changed = True
        digests[path] = entry["sha256"]
    if changed and memo_path:
        memo = {k: v for k, v in memo.items() if isinstance(v, dict)}  # drops entries of the old path:size:mtime form
        cache.write(write_atomic, memo_path, json.dumps(memo, indent=0))
    return digests


def _stamp(path: Path) -> str:
    """What changes whenever the file's content may have: size, mtime, ctime (ns), inode, device."""
    s = path.stat()
    return f"{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}:{s.st_ino}:{s.st_dev}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return stream_sha256(f)


def stream_sha256(f) -> str:
    """The hex SHA-256 of what is left to read of the binary file ``f``, read in 4 MiB chunks (never held whole)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 22), b""):
        digest.update(chunk)
    return digest.hexdigest()


def combine_sha256(named_digests) -> str:
    """One SHA-256 over (file name, hex digest) pairs, in the order given: a model's weights hash."""
    combined = hashlib.sha256()
    for name, digest in named_digests:
        combined.update(f"{name}\0{digest}\n".encode())
    return combined.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def tokenizer_sha256(tokenizer) -> str:
    """A content hash of the tokenizer's vocabulary, merges and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = {"vocab": sorted(tokenizer.get_vocab().items())}
    spec["special"] = sorted(map(str, tokenizer.all_special_tokens))
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to what the loader uses ("auto" means device_map="auto")."""
    import torch

    if device == "auto":
        return "auto" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AnalogError(f"--analog-device={device} but torch sees no CUDA device; use cpu or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise AnalogError(f"--analog-device={device} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def resolve_dtype(dtype: str, device: str):
    """``auto`` is bfloat16 on CUDA (float16 where bf16 is unsupported) and float32 on the CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_model(
    ref: str | ModelSource,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load a decoder-only causal LM and its tokenizer for inference.

    ``ref`` is a hub id, a model directory or a ``.gguf`` file, or a
    `ModelSource` that `resolve_source` already found.

    ``device="auto"`` places the model with ``device_map="auto"`` when CUDA is
    present (a teacher larger than one GPU is spread over all of them) and on
    the CPU otherwise.

    Raises:
        AnalogError: with a one-line reason for any model that cannot be used,
            NaN or infinite weights included.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = ref if isinstance(ref, ModelSource) else resolve_source(
        ref, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    placement = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, "cpu" if placement == "cpu" else "cuda")
    config = read_config(source, trust_remote_code=trust_remote_code)
    kwargs = {"trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    safetensors = None if source.gguf_file else any(p.suffix == ".safetensors" for p in source.weight_files())
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.directory, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source.directory,
            config=config,
            dtype=torch_dtype,
            device_map="auto" if placement == "auto" else None,
            use_safetensors=safetensors,
            **kwargs,
        )
    except Exception as exc:
        raise AnalogError(_load_failure(source.ref, exc, trust_remote_code)) from None
    if source.gguf_file:
        _strip_gguf_quantization(model)
    if placement not in ("auto", "cpu"):
        model.to(placement)
    model.eval().requires_grad_(False)
    loaded = LoadedModel(model, tokenizer, describe(model, tokenizer, source, cache_dir), source)
    check_finite(loaded)
    return loaded


def read_config(source: ModelSource, *, trust_remote_code: bool = False):
    """The model's transformers config, checked to be a decoder-only causal LM; no weights are read.

    Parsed once per process and source (a GGUF file takes seconds to parse); each call gets a copy.
    """
    return copy.deepcopy(_read_config(source.ref, source.directory, source.gguf_file, trust_remote_code))


@functools.lru_cache(maxsize=16)
def _read_config(ref: str, directory: Path, gguf_file: str | None, trust_remote_code: bool):
    from transformers import AutoConfig

    kwargs = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        config = AutoConfig.from_pretrained(directory, **kwargs)
    except Exception as exc:
        raise AnalogError(_load_failure(ref, exc, trust_remote_code)) from None
    _check_causal(ref, config)
    return config


def _load_failure(ref: str, exc: Exception, trust_remote_code: bool) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "trust_remote_code" in text and not trust_remote_code:
        return (
            f"{ref} needs custom code from its repository; pytest-analog runs none by default. "
            "Pass --analog-trust-remote-code if you trust it"
        )
    return f"could not load {ref}: {text[:300]}"


def _check_causal(ref: str, config) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    architectures = getattr(config, "architectures", None) or []
    causal_classes = set(CAUSAL.values())
    if getattr(config, "is_encoder_decoder", False) or config.model_type not in CAUSAL or (
        architectures and not any(a in causal_classes or a.endswith("ForCausalLM") for a in architectures)
    ):
        kind = ", ".join(architectures) or config.model_type
        raise AnalogError(
            f"{ref} is not a decoder-only causal language model ({kind}); "
            "pytest-analog compares causal LMs such as Llama, Qwen or GPT-2"
        )


def _strip_gguf_quantization(model) -> None:
    """GGUF weights are dequantized on load; drop the quantizer so the model is a plain float model."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None


def describe(model, tokenizer, source: ModelSource, cache_dir: Path | None = None) -> dict[str, Any]:
    """The record kept of a model in reports: identity, size, shape and hashes."""
    config = model.config.get_text_config()
    first = next(model.parameters())
    return {
        "id": source.ref,
        "source": source.kind,
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "sha256": sha256_files(source.weight_files(), cache_dir),
        "tokenizer": {
            "name": getattr(tokenizer, "name_or_path", source.ref),
            "vocab_size": len(tokenizer),
            "sha256": tokenizer_sha256(tokenizer),
        },
        "dtype": str(first.dtype).removeprefix("torch."),
        "device": str(first.device) if not getattr(model, "hf_device_map", None) else "auto",
    }


def load_pair(teacher: str | ModelSource, analog: str | ModelSource, **kwargs) -> ModelPair:
    """Load a teacher and its analog with the same options (see `load_model`)."""
    return ModelPair(load_model(teacher, **kwargs), load_model(analog, **kwargs))


__all__ = [
    "LoadedModel", "ModelPair", "ModelSource", "check_files", "check_finite", "combine_sha256", "file_sha256s",
    "load_model", "load_pair", "read_config", "resolve_source", "sha256_files",
]
