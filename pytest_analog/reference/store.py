"""Teacher references on disk: a folder of safetensors files and one JSON manifest.

A reference holds what the teacher contributes to each run (`runs.RUNS`), as one
`Part` per run: tensors (``<run>.safetensors``) and JSON data (``<run>.json``),
plus the teacher's tokenizer files (``tokenizer/``, data only) so that prompts
are tokenized and aligned as the teacher did. ``manifest.json`` names the
schema, the teacher's record, each part with the settings and inputs it was
built from, and the SHA-256 of every file; the reference's id is the SHA-256 of
the manifest itself. Nothing in it is pickled or executed: tensors load with
safetensors, the rest is JSON, and the tokenizer is read from ``tokenizer.json``
with remote code off.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pytest_analog.errors import AnalogError
from pytest_analog.models import file_sha256s

FORMAT = "pytest-analog-reference"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Part:
    """What the teacher contributes to one run: tensors, JSON data and the key it was built from."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    key: dict[str, Any] = field(default_factory=dict)  # the settings and inputs it read; checked on use

    def files(self, name: str) -> dict[str, bytes]:
        """The part's files by name inside a reference folder."""
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in sorted(self.tensors.items())}
        return {f"{name}.safetensors": save(tensors), f"{name}.json": _canonical(self.meta)}


@dataclass
class Reference:
    """A teacher reference: its manifest, the parts read so far and, once written, its folder."""

    manifest: dict[str, Any]
    parts: dict[str, Part]  # the parts loaded so far (all of them for a reference built in memory)
    path: Path | None = None
    tokenizer_data: dict[str, bytes] | None = None  # the tokenizer's files of a reference built in memory
    tokenizer: Any = None  # the teacher's tokenizer, read from the reference's files on first use
    data: dict[str, bytes] | None = None  # every file's bytes, of a reference `build` serialized (`write` reuses them)

    @property
    def id(self) -> str:
        """The SHA-256 of the manifest: changes with any file, setting or teacher record."""
        return manifest_id(self.manifest)

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher's record (as `models.describe` writes it)."""
        return self.manifest["teacher"]

    def has(self, name: str) -> bool:
        return name in self.manifest["parts"]

    def part(self, name: str, key: dict[str, Any] | None = None) -> Part:
        """The part of run ``name``; with ``key``, refused unless it was built from those settings and inputs."""
        if not self.has(name):
            raise AnalogError(f"teacher reference {self._where} holds no {name!r} part; build it with that suite")
        if key is not None:
            problem = key_difference(self.manifest["parts"][name]["key"], key)
            if problem:
                raise AnalogError(
                    f"teacher reference {self._where} was built with other settings than this run asks for ({problem}); "
                    "build a reference with this run's settings, or run with the reference's"
                )
        if name not in self.parts:
            self.parts[name] = _read_part(self.path, name, self.manifest)
        return self.parts[name]

    def teacher_tokenizer(self):
        """The teacher's tokenizer, read from the reference's files (fast tokenizer, no code)."""
        if self.tokenizer is None:
            try:
                self.tokenizer = tokenizer_from_files(self.tokenizer_files())
            except Exception as exc:  # noqa: BLE001 - any failure to read is one line
                raise AnalogError(f"teacher reference {self._where}: its tokenizer cannot be read: {type(exc).__name__}: {exc}") from None
        return self.tokenizer

    def tokenizer_files(self) -> dict[str, bytes]:
        """The tokenizer's files by name (``tokenizer/`` inside the folder)."""
        if self.tokenizer_data is None:
            names = [f for f in self.manifest["files"] if f.startswith("tokenizer/")]
            self.tokenizer_data = {f.removeprefix("tokenizer/"): _checked(self.path, f, self.manifest) for f in names}
        return self.tokenizer_data

    @property
    def _where(self) -> str:
        return str(self.path) if self.path else f"{self.id[:12]} (built in memory)"


def build(teacher: dict[str, Any], parts: dict[str, Part], tokenizer: dict[str, bytes], versions: dict[str, Any]) -> Reference:
    """A reference in memory from the teacher's record, its parts and its tokenizer's files (`tokenizer_files`)."""
    files = {name: data for run, part in parts.items() for name, data in part.files(run).items()}
    files.update({f"tokenizer/{name}": data for name, data in tokenizer.items()})
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    keys = {run: part.key for run, part in parts.items()}
    return Reference(manifest(teacher, keys, digests, versions), dict(parts), None, dict(tokenizer), data=files)


def manifest(teacher: dict[str, Any], keys: dict[str, Any], files: dict[str, str], versions: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a reference: the teacher's record, each part's key, every file's SHA-256, the versions."""
    data = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "teacher": teacher,
        "versions": versions,
        "parts": {run: {"key": key} for run, key in sorted(keys.items())},
        "files": dict(sorted(files.items())),
    }
    return json.loads(_canonical(data))


def merged(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """One manifest holding the parts of several of one teacher (pytest-xdist workers each read some parts)."""
    first = manifests[0]
    keys = {run: entry["key"] for m in manifests for run, entry in m["parts"].items()}
    files = {name: digest for m in manifests for name, digest in m["files"].items()}
    versions = {name: v for m in manifests for name, v in m["versions"].items()}
    return manifest(first["teacher"], keys, files, versions)


def manifest_id(data: dict[str, Any]) -> str:
    """The id of a reference with this manifest."""
    return hashlib.sha256(_canonical(data)).hexdigest()


def part_files(files: dict[str, str], name: str) -> dict[str, str]:
    """The SHA-256 of each file of part ``name``, from a manifest's ``files`` (name -> SHA-256)."""
    return {f: d for f, d in files.items() if f.split("/")[0].rsplit(".", 1)[0] == name}


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for ``tokenizer``, without any pointer to code (``auto_map``) and
    without the truncation and padding state that tokenizing leaves in ``tokenizer.json``: the same files
    whatever the tokenizer was used for."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
    if "tokenizer_config.json" in files:
        config = json.loads(files["tokenizer_config.json"])
        config.pop("auto_map", None)
        files["tokenizer_config.json"] = _canonical(config)
    if "tokenizer.json" in files:
        spec = json.loads(files["tokenizer.json"])
        spec.update(truncation=None, padding=None)
        files["tokenizer.json"] = _canonical(spec)
    return files


def write(reference: Reference, out: Path) -> Reference:
    """Write ``reference`` (every part loaded) to the folder ``out`` at once: a reader finds the old folder or
    the new one, never a mix. An existing folder is replaced only when it is a reference itself."""
    out = Path(out)
    problem = folder_problem(out)
    if problem:
        raise AnalogError(problem)
    files = reference.data
    if files is None:
        files = {name: data for run in reference.manifest["parts"] for name, data in reference.part(run).files(run).items()}
        files.update({f"tokenizer/{name}": data for name, data in reference.tokenizer_files().items()})
    for name, digest in reference.manifest["files"].items():
        if name not in files or hashlib.sha256(files[name]).hexdigest() != digest:
            raise AnalogError(f"reference file {name} does not match its manifest (the tokenizer or a part changed)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, data in {**files, MANIFEST: _canonical(reference.manifest)}.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        os.chmod(staging, 0o777 & ~_umask())
        old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Reference(reference.manifest, dict(reference.parts), out, reference.tokenizer_files(), reference.tokenizer)


def folder_problem(out: Path) -> str | None:
    """Why a reference cannot be written to ``out`` (a file, or a folder that is not a reference), or None."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        return f"{out} exists and is not a teacher reference; give a new or empty folder"
    return None


def load(path) -> Reference:
    """Open the reference folder ``path``: its manifest read and every file checked against it.

    Raises:
        AnalogError: one line, when ``path`` is missing, not a reference, of a newer schema, or any file
            is missing or changed.
    """
    path = Path(path)
    if not path.exists():
        raise AnalogError(f"teacher reference {path} does not exist; build one with: analog-reference build --teacher T --out {path}")
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError):
        raise AnalogError(f"{path} is not a teacher reference (no readable {MANIFEST}); build one with analog-reference build") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AnalogError(f"{path} is not a teacher reference ({MANIFEST} is not a pytest-analog reference manifest)")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise AnalogError(
            f"teacher reference {path} has schema version {version!r}; this pytest-analog reads up to {SCHEMA_VERSION}: upgrade pytest-analog"
        )
    problem = _file_problem(path, manifest)
    if problem:
        raise AnalogError(f"teacher reference {path} is refused: {problem}; rebuild it or fetch it again")
    return Reference(manifest, {}, path)


def key_difference(built: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first setting or input where ``built`` and ``wanted`` differ, as 'name: built vs wanted', else None."""
    for name in sorted(set(built) | set(wanted)):
        if built.get(name) != wanted.get(name):
            return f"{name}: built with {_short(built.get(name))}, this run reads {_short(wanted.get(name))}"
    return None


def _file_problem(path: Path, manifest: dict[str, Any]) -> str | None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("parts"), dict):
        return f"{MANIFEST} lists no files"
    for name, digest in sorted(files.items()):
        target = path / name
        if not target.is_file():
            return f"its file {name} is missing"
        if file_sha256s([target])[target] != digest:
            return f"its file {name} was changed (SHA-256 differs from the manifest)"
    return None


def _read_part(path: Path, name: str, manifest: dict[str, Any]) -> Part:
    from safetensors.torch import load as load_tensors

    tensors, meta = (_checked(path, f"{name}{suffix}", manifest) for suffix in (".safetensors", ".json"))
    return Part(load_tensors(tensors), json.loads(meta), manifest["parts"][name]["key"])


def _checked(path: Path, name: str, manifest: dict[str, Any]) -> bytes:
    """The bytes of a reference's file, refused unless they are those its manifest names."""
    raw = (path / name).read_bytes()
    if hashlib.sha256(raw).hexdigest() != manifest["files"].get(name):
        raise AnalogError(f"teacher reference {path} is refused: its file {name} was changed since it was opened")
    return raw


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1, default=_plain).encode()


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a reference's JSON holds a {type(value).__name__}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask



def tokenizer_from_files(files: dict[str, bytes]):
    """A tokenizer read from its files (as `tokenizer_files` gives them), with remote code off."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
