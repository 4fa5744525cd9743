"""The teacher's half of a gate: each run's part, from a given reference or from the teacher itself.

`TeacherHalf.part` is the one way a run gets what the teacher contributes. With
a reference (``--analog-reference``) the part is read from it, checked against
the settings and inputs this run asks for. Without one, the part is read from
the cache (keyed by the teacher's file hashes, device, dtype, the settings and
inputs the teacher half reads, and package versions) or built from the loaded
teacher and stored there as a one-part reference: a second analog against the
same teacher runs only the analog. Either way the analog half reads a `Part`,
and the parts read make up the run's reference (`TeacherHalf.reference`), whose
id the report names.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Callable

from pytest_analog import __version__, cache
from pytest_analog.errors import AnalogError
from pytest_analog.runs import Context, Run
from pytest_analog.models import LoadedModel, file_sha256s, resolve_device, resolve_dtype, sha256_files
from pytest_analog.part import Part
from pytest_analog.reference import store
from pytest_analog.versions import package_version


class TeacherHalf:
    """The teacher's parts of one gate or build, read or built once each."""

    def __init__(self, context: Context, *, reference: store.Reference | None = None, source=None,
                 load: Callable[[], LoadedModel] | None = None, cache_dir: Path | None = None,
                 device: str = "auto", dtype: str = "auto"):
        """``context`` is what `Run.teacher_inputs` reads (the session, or the build command's stand-in);
        give either ``reference`` or the teacher's ``source`` with ``load``, which loads it."""
        self.context, self.given, self.source, self._load, self.cache_dir = context, reference, source, load, cache_dir
        self.device, self.dtype = device, dtype
        self.parts: dict[str, Part] = {}
        self.files: dict[str, str] = {}  # file name -> SHA-256, of every part read
        self.packages: set[str] = set()
        self._record = reference.teacher if reference else None
        self._tokenizer_files: dict[str, bytes] | None = None
        self._tokenizer = reference.teacher_tokenizer() if reference else None
        self._model: LoadedModel | None = None

    @property
    def live(self) -> bool:
        """True when the teacher itself can run (no reference was given): the one place reference vs live is decided."""
        return self.given is None

    def key(self, spec: Run) -> tuple[dict[str, Any], Any]:
        """The key a run's part must have (settings and inputs of its teacher half), and those inputs."""
        inputs = spec.teacher_inputs(self.context)
        return {"settings": spec.teacher_settings(self.context.analog_config), "inputs": inputs.key}, inputs

    def part(self, spec: Run) -> Part:
        """The teacher's part of run ``spec``: from the reference, the cache, or the teacher."""
        if spec.name not in self.parts:
            key, inputs = self.key(spec)
            if self.given is not None:
                part = self.given.part(spec.name, key, check=spec.part_problem)
                files = store.part_files(self.given.manifest["files"], spec.name)
            else:
                part, files = self._live(spec, key, inputs)
            self.parts[spec.name] = part
            self.files.update(files)
            self.packages.update(spec.packages)
        return self.parts[spec.name]

    def _live(self, spec, key, inputs) -> tuple[Part, dict[str, str]]:
        folder = self._cache_folder(spec, key)
        if folder is not None and (folder / store.MANIFEST).is_file():
            with contextlib.suppress(AnalogError):  # a broken entry is rebuilt
                cached = store.load(folder)
                part = cached.part(spec.name, key, check=spec.part_problem)
                self._record = self._record or cached.teacher
                if self._tokenizer_files is None:
                    self._tokenizer_files = cached.tokenizer_files()
                return part, store.part_files(cached.manifest["files"], spec.name)
        teacher = self.model()
        part = spec.teacher(teacher, self.context.analog_config, **inputs.args)
        part.key = key
        built = store.build(self.record(), {spec.name: part}, self.tokenizer_files(), self.versions(spec.packages))
        if folder is not None:
            cache.write(store.write, built, folder)  # a cache that cannot be written is skipped, with one warning
        return part, store.part_files(built.manifest["files"], spec.name)

    def _cache_folder(self, spec, key) -> Path | None:
        if self.cache_dir is None:
            return None
        device = "cpu" if resolve_device(self.device) == "cpu" else "cuda"
        digest = cache.cache_key(
            teacher=sha256_files(self.source.files(), self.cache_dir),
            device=device,
            dtype=str(resolve_dtype(self.dtype, device)),
            key=key,
            code=spec.code,
            versions=self.versions(spec.packages),
        )
        return self.cache_dir / "reference" / spec.name / digest

    def model(self) -> LoadedModel:
        """The loaded teacher (live gate and build only)."""
        if self._model is None:
            if self._load is None:
                raise AnalogError("this run gates against a teacher reference: the teacher model is not available")
            self._model = self._load()
        return self._model

    def record(self) -> dict[str, Any]:
        """The teacher's record: `models.describe`'s info and the SHA-256 of each of its files."""
        if self._record is None:
            info = self.model().info
            files = file_sha256s(self.source.files(), self.cache_dir)
            self._record = {
                **info,
                "id": self._portable(info["id"]),
                "tokenizer": {**info["tokenizer"], "name": self._portable(info["tokenizer"]["name"])},
                "files": {path.name: digest for path, digest in files.items()},
            }
        return self._record

    def _portable(self, ref: str) -> str:
        """A hub id as it is; a local path by its last part, so the record (and the reference's id) does not
        depend on where the teacher's files happen to lie."""
        return ref if self.source.kind == "hub" else Path(ref).name

    def tokenizer(self):
        """The teacher's tokenizer as a reference holds it (read back from its files), the same in every mode."""
        if self._tokenizer is None:
            self._tokenizer = store.tokenizer_from_files(self.tokenizer_files())  # as a reference's user reads it
        return self._tokenizer

    def tokenizer_files(self) -> dict[str, bytes]:
        if self._tokenizer_files is None:
            given = self.given.tokenizer_files() if self.given is not None else None
            self._tokenizer_files = given or store.tokenizer_files(self.model().tokenizer)
        return self._tokenizer_files

    def stand_in(self) -> LoadedModel:
        """The teacher as an analog half sees it: its tokenizer and record, no model."""
        return LoadedModel(None, self.tokenizer(), self.record(), None)

    def versions(self, packages) -> dict[str, Any]:
        return {"pytest_analog": __version__, **{name: package_version(name) for name in sorted(packages)}}

    def reference(self) -> store.Reference:
        """The reference this gate reads: the given one, or the one made of the parts built or read so far."""
        if self.given is not None:
            return self.given
        return store.Reference(self.manifest(), dict(self.parts), None, self.tokenizer_files(), self._tokenizer)

    def manifest(self) -> dict[str, Any]:
        """The manifest of `reference` (the report's and the xdist hand-over's), without reading any tokenizer."""
        if self.given is not None:
            return self.given.manifest
        tokenizer = {f"tokenizer/{n}": hashlib.sha256(d).hexdigest() for n, d in self.tokenizer_files().items()}
        keys = {name: part.key for name, part in self.parts.items()}
        return store.manifest(self.record(), keys, {**self.files, **tokenizer}, self.versions(self.packages))
