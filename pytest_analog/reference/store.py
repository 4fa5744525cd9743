"""Teacher references on disk: a folder of safetensors files and one JSON manifest.

A reference holds what the teacher contributes to each suite's run (`runs.Run`), as one
`Part` per run: tensors (``<run>.safetensors``) and JSON data (``<run>.json``),
plus the teacher's tokenizer files (``tokenizer/``, data only) so that prompts
are tokenized and aligned as the teacher did. ``manifest.json`` names the
schema, the teacher's record, each part with the settings and inputs it was
built from, and the SHA-256 of every file; the reference's id is the SHA-256 of
the manifest itself. Nothing in it is pickled or executed: tensors load with
safetensors, the rest is JSON, and the tokenizer is read from ``tokenizer.json``
with remote code off.

A reference comes from strangers, so it is read as hostile data: the manifest's
structure and every name in it are checked before any file is opened (a name is
a part's file or ``tokenizer/<file>``: no absolute path, ``..``, backslash or
other spelling can leave the folder), no symlink is followed inside the folder,
each file's bytes are read once and hashed as they stream in, and each part is
checked against its run's schema and the teacher record (`Reference.part`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pytest_analog.errors import AnalogError
from pytest_analog.models import stream_sha256
from pytest_analog.part import Part, canonical, kind, part_problem

FORMAT = "pytest-analog-reference"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer/"  # the folder of the teacher tokenizer's files
PART_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # a run's name, which names its part's files
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")  # one plain file name: no separator, no leading dot
STALE_AFTER_S = 60  # a build's staging folder this old and unlocked was left by a killed build


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

    def part(self, name: str, key: dict[str, Any] | None = None,
             check: Callable[[Part, dict[str, Any]], str | None] | None = None) -> Part:
        """The part of run ``name``; with ``key``, refused unless it was built from those settings and inputs;
        with ``check`` (the run's schema: (part, teacher record) -> problem or None), refused unless it fits."""
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
            part = _read_part(self.path, name, self.manifest)
            problem = check(part, self.teacher) if check else None
            if problem:
                raise AnalogError(f"teacher reference {self._where} is refused: its {name} part {problem}; rebuild it or fetch it again")
            self.parts[name] = part
        return self.parts[name]

    def teacher_tokenizer(self):
        """The teacher's tokenizer, read from the reference's files (fast tokenizer, no code)."""
        if self.tokenizer is None:
            try:
                self.tokenizer = tokenizer_from_files(self.tokenizer_files())
            except Exception as exc:  # noqa: BLE001 - any failure to read is one line
                raise AnalogError(f"teacher reference {self._where}: its tokenizer cannot be read: {_said(exc)}") from None
        return self.tokenizer

    def tokenizer_files(self) -> dict[str, bytes]:
        """The tokenizer's files by name (``tokenizer/`` inside the folder)."""
        if self.tokenizer_data is None:
            names = [f for f in self.manifest["files"] if f.startswith(TOKENIZER)]
            self.tokenizer_data = {f.removeprefix(TOKENIZER): _checked(self.path, f, self.manifest) for f in names}
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
    return json.loads(canonical(data))


def merged(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """One manifest holding the parts of several of one teacher (pytest-xdist workers each read some parts)."""
    first = manifests[0]
    keys = {run: entry["key"] for m in manifests for run, entry in m["parts"].items()}
    files = {name: digest for m in manifests for name, digest in m["files"].items()}
    versions = {name: v for m in manifests for name, v in m["versions"].items()}
    return manifest(first["teacher"], keys, files, versions)


def manifest_id(data: dict[str, Any]) -> str:
    """The id of a reference with this manifest."""
    return hashlib.sha256(canonical(data)).hexdigest()


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
        files["tokenizer_config.json"] = canonical(config)
    if "tokenizer.json" in files:
        spec = json.loads(files["tokenizer.json"])
        spec.update(truncation=None, padding=None)
        files["tokenizer.json"] = canonical(spec)
    return files


def write(reference: Reference, out: Path) -> Reference:
    """Write ``reference`` (every part loaded) to the folder ``out`` at once: a reader finds the old folder or
    the new one, never a mix. An existing folder is replaced only when it is a reference itself; staging and
    replaced folders that killed writes of ``out`` left are removed first (`remove_stale`)."""
    out = Path(out)
    problem = folder_problem(out) or manifest_problem(reference.manifest)
    if problem:
        raise AnalogError(problem)
    files = reference.data
    if files is None:
        files = {name: data for run in reference.manifest["parts"] for name, data in reference.part(run).files(run).items()}
        files.update({f"{TOKENIZER}{name}": data for name, data in reference.tokenizer_files().items()})
    for name, digest in reference.manifest["files"].items():
        if name not in files or hashlib.sha256(files[name]).hexdigest() != digest:
            raise AnalogError(f"reference file {name} does not match its manifest (the tokenizer or a part changed)")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    lock = _lock(staging)  # held until the staging folder is the reference: `remove_stale` leaves it alone
    try:
        for name in reference.manifest["files"]:
            (staging / name).parent.mkdir(exist_ok=True)
            (staging / name).write_bytes(files[name])
        (staging / MANIFEST).write_bytes(canonical(reference.manifest))
        os.chmod(staging, 0o777 & ~_umask())
        old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old")
        try:
            if out.exists():
                os.replace(out, old)
            os.replace(staging, out)
        except BaseException:  # Ctrl-C or a failure between the two renames: the old reference goes back
            if old.exists() and not out.exists():
                os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(lock)
    return Reference(reference.manifest, dict(reference.parts), out, reference.tokenizer_files(), reference.tokenizer)


def remove_stale(out: Path) -> None:
    """Remove what killed writes of ``out`` left beside it: ``.OUT.*.old`` folders (a replaced reference, never
    read again) and ``.OUT.*.tmp`` staging folders older than `STALE_AFTER_S` whose writer's lock is gone."""
    stale = re.compile(re.escape(f".{out.name}.") + r"(?:[a-z0-9_]{8}\.tmp|[0-9a-f]{12}\.old)")
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            if not stale.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
                continue
            if entry.suffix == ".old":
                shutil.rmtree(entry, ignore_errors=True)
            elif time.time() - entry.stat().st_mtime > STALE_AFTER_S:
                with contextlib.suppress(OSError):
                    lock = _lock(entry, wait=False)
                    shutil.rmtree(entry, ignore_errors=True)
                    os.close(lock)


def _lock(folder: Path, *, wait: bool = True) -> int:
    """An exclusive lock on ``folder`` (released when its descriptor is closed or its process dies).

    Raises:
        BlockingIOError: ``wait`` is False and another process holds the lock.
    """
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


def folder_problem(out: Path) -> str | None:
    """Why a reference cannot be written to ``out`` (a file, or a folder that is not a reference), or None.

    A folder is a reference only when its ``manifest.json`` is a pytest-analog reference manifest: a web
    app's folder with a ``manifest.json`` of its own is never replaced.
    """
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if out.is_dir():
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads(_read(out, MANIFEST)[0])
            if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
                return None
    return f"{out} exists and is not a teacher reference; give a new or empty folder"


def load(path) -> Reference:
    """Open the reference folder ``path``: its manifest read and checked, every file checked against it.

    Raises:
        AnalogError: one line, when ``path`` is missing, not a reference, of a newer schema, its manifest is
            malformed or names a file outside the folder, or any file is missing, changed or a symlink.
    """
    path = Path(path)
    if not path.exists():
        raise AnalogError(f"teacher reference {path} does not exist; build one with: analog-reference build --teacher T --out {path}")
    try:
        manifest = json.loads(_read(path, MANIFEST)[0])
    except (OSError, ValueError):
        raise AnalogError(f"{path} is not a teacher reference (no readable {MANIFEST}); build one with analog-reference build") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AnalogError(f"{path} is not a teacher reference ({MANIFEST} is not a pytest-analog reference manifest)")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise AnalogError(
            f"teacher reference {path} has schema version {version!r}; this pytest-analog reads up to {SCHEMA_VERSION}: upgrade pytest-analog"
        )
    problem = manifest_problem(manifest) or _file_problem(path, manifest)
    if problem:
        raise AnalogError(f"teacher reference {path} is refused: {problem}; rebuild it or fetch it again")
    return Reference(manifest, {}, path)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """The first way ``manifest`` is malformed, as a phrase, or None.

    Checked before any file is read: the teacher record's fields that runs read, each part's name and key,
    and the files: each a SHA-256 and a plain name inside the folder, exactly each part's two files
    (``<part>.safetensors``, ``<part>.json``) and ``tokenizer/<file>`` ones.
    """
    teacher, parts, files = manifest.get("teacher"), manifest.get("parts"), manifest.get("files")
    if not isinstance(teacher, dict):
        return f"its {MANIFEST} holds no teacher record (teacher is {kind(teacher)})"
    for name in ("num_layers", "hidden_size"):
        if not _positive(teacher.get(name)):
            return f"its teacher record's {name} is {_shown(teacher.get(name))}, not a positive integer"
    if not isinstance(teacher.get("files", {}), dict) or not isinstance(manifest.get("versions"), dict):
        return f"its {MANIFEST}'s teacher files or versions are not a mapping"
    if not isinstance(parts, dict) or not isinstance(files, dict):
        return f"its {MANIFEST}'s parts or files are not a mapping"
    for name, entry in parts.items():
        if not PART_NAME.fullmatch(name):
            return f"its {MANIFEST} names the part {name!r}, which is not a run's name"
        key = entry.get("key") if isinstance(entry, dict) else None
        if not (isinstance(key, dict) and all(isinstance(key.get(field, {}), dict) for field in ("settings", "inputs"))):
            return f"its {name} part has no key of settings and inputs in {MANIFEST}"
    expected = {f"{name}{suffix}": name for name in parts for suffix in (".safetensors", ".json")}
    for name, digest in files.items():
        folder, _, file = name.rpartition("/")
        if not (name in expected or (f"{folder}/" == TOKENIZER and FILE_NAME.fullmatch(file))):
            return f"its {MANIFEST} names the file {name!r}, which is neither a part's file nor tokenizer/<plain file name>"
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            return f"its {MANIFEST} gives the file {name} no SHA-256 but {_shown(digest)}"
    missing = sorted(set(expected) - set(files))
    return f"its {MANIFEST} lists no file {missing[0]} for its {expected[missing[0]]} part" if missing else None


def key_difference(built: Any, wanted: Any, where: str = "") -> str | None:
    """The first setting or input, by its deepest dotted name, where ``built`` and ``wanted`` differ, as
    'name: built with X, this run reads Y', else None."""
    if isinstance(built, dict) and isinstance(wanted, dict):
        for name in sorted(set(built) | set(wanted), key=str):
            if name not in built or name not in wanted or built[name] != wanted[name]:
                return key_difference(built.get(name, _ABSENT), wanted.get(name, _ABSENT), f"{where}.{name}".lstrip("."))
        return None
    if isinstance(built, list) and isinstance(wanted, list) and len(built) == len(wanted):
        return next((key_difference(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(built, wanted)) if a != b), None)
    return None if built == wanted else f"{where}: built with {_shown(built)}, this run reads {_shown(wanted)}"


_ABSENT = object()  # a key one side lacks


def _file_problem(path: Path, manifest: dict[str, Any]) -> str | None:
    for name, digest in sorted(manifest["files"].items()):
        try:
            actual = _digest(path, name)
        except OSError as exc:
            return _open_problem(name, exc)
        if actual != digest:
            return f"its file {name} was changed (SHA-256 differs from the manifest)"
    return None


def _read_part(path: Path, name: str, manifest: dict[str, Any]) -> Part:
    from safetensors.torch import load as load_tensors

    raw, meta = (_checked(path, f"{name}{suffix}", manifest) for suffix in (".safetensors", ".json"))
    try:
        tensors, meta = load_tensors(raw), json.loads(meta)
    except Exception as exc:  # noqa: BLE001 - safetensors' own error type, or JSON's: one line either way
        raise AnalogError(f"teacher reference {path} is refused: its {name} part cannot be read ({_said(exc)}); "
                          "rebuild it or fetch it again") from None
    problem = part_problem(tensors, meta)
    if problem:
        raise AnalogError(f"teacher reference {path} is refused: its {name} part {problem}; rebuild it or fetch it again")
    return Part(tensors, meta, manifest["parts"][name]["key"])


def _checked(path: Path, name: str, manifest: dict[str, Any]) -> bytes:
    """The bytes of a reference's file, read once and refused unless they hash to what its manifest names."""
    try:
        raw, digest = _read(path, name, whole=True)
    except OSError as exc:
        raise AnalogError(f"teacher reference {path} is refused: {_open_problem(name, exc)}") from None
    if digest != manifest["files"][name]:
        raise AnalogError(f"teacher reference {path} is refused: its file {name} was changed since it was opened")
    return raw


def _open(folder: Path, name: str) -> int:
    """A read-only descriptor of the regular file ``name`` (``/``-separated) in ``folder``, no symlink followed."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        *folders, last = name.split("/")
        for inner in folders:
            fd, outer = os.open(inner, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd), fd
            os.close(outer)
        file = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file).st_mode):
        os.close(file)
        raise OSError(errno.EINVAL, "not a regular file")
    return file


def _read(folder: Path, name: str, *, whole: bool = True) -> tuple[bytes, str]:
    """The bytes (``whole``; else none, streamed through the hash) of file ``name`` and the SHA-256 of those bytes."""
    with os.fdopen(_open(folder, name), "rb") as f:
        if whole:
            size = os.fstat(f.fileno()).st_size
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            if size > available:
                raise OSError(errno.ENOMEM, f"{size / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of free memory")
            raw = f.read()
            return raw, hashlib.sha256(raw).hexdigest()
        return b"", stream_sha256(f)


def _digest(folder: Path, name: str) -> str:
    return _read(folder, name, whole=False)[1]


def _open_problem(name: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"its file {name} is missing"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EINVAL):
        return f"its file {name} is not a regular file inside the folder (a symlink, a folder or a device)"
    return f"its file {name} cannot be read ({exc.strerror or exc})"


def _said(exc: Exception) -> str:
    """An exception as one line: its type and its message's first line."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shown(value: Any) -> str:
    """A value in one line, cut at 200 characters."""
    if value is _ABSENT:
        return "nothing"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tokenizer_from_files(files: dict[str, bytes]):
    """A tokenizer read from its files (as `tokenizer_files` gives them), with remote code off.

    Raises:
        AnalogError: a file name that is not one plain name (it would be written outside the temporary folder).
    """
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            if not FILE_NAME.fullmatch(name):
                raise AnalogError(f"the tokenizer file name {name!r} is not a plain file name")
            with open(os.path.join(folder, name), "xb") as f:
                f.write(data)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
