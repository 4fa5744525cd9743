"""Leaderboard submission bundles (``pytest --analog-submit=PATH``).

A bundle is one JSON file: the fidelity report, the configuration, the
environment, package versions and the SHA-256 of every file of both models,
under the JSON Schema shipped in ``pytest_analog/schemas/submission.schema.json``.
The per-file digests are what ``sha256sum`` prints, so anyone holding the
models can check them; the report's weight hashes are recomputable from them
(`pytest_analog.models.combine_sha256`), which is what ties the two together.
The report names the teacher reference it was scored against (its ``reference``
section: the reference's id and teacher record; absent when no run read the
teacher's part, e.g. compliance alone), so a bundle gated without the teacher
(``--analog-reference``) takes the teacher's file digests from that record.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from pytest_analog.atomic import write_atomic
from pytest_analog.errors import AnalogError
from pytest_analog.models import PICKLE_SUFFIXES, ModelSource, combine_sha256, file_sha256s
from pytest_analog.report import render_json
from pytest_analog.versions import package_version

SUBMISSION_VERSION = 3
SCHEMA_PATH = Path(__file__).with_name("schemas") / "submission.schema.json"
# Packages whose versions can change a measured value.
PACKAGES = ("pytest-analog", "torch", "transformers", "tokenizers", "safetensors", "accelerate", "gguf", "numpy", "scipy", "pytest")
# Lists and dicts nest at most this deep in a bundle (a real one: about 10), so every check,
# recursive or not, stays far from Python's recursion limit.
MAX_DEPTH = 64
# A bundle file is read whole; a real one is tens of kilobytes.
MAX_BYTES = 16 * 2**20
WEIGHT_SUFFIXES = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
_TOKENIZER_FILES = {"special_tokens_map.json", "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja"}


def file_kind(path: Path, source: ModelSource) -> str:
    """``weights``, ``config``, ``tokenizer`` or ``other`` (a model card, a licence, ...)."""
    return name_kind(path.name, weights=path in source.weight_files())


def name_kind(name: str, *, weights: bool) -> str:
    """A file's kind: ``weights`` when it is one of the model's weight files, else by its name."""
    if weights:
        return "weights"
    if name.startswith("tokenizer") or name in _TOKENIZER_FILES or Path(name).suffix in (".model", ".tiktoken"):
        return "tokenizer"
    if name.endswith("config.json"):
        return "config"
    return "other"


def model_files(source: ModelSource, cache_dir: Path | None = None) -> dict[str, Any]:
    """The bundle's record of one model: where it came from and each file's kind, size and SHA-256."""
    digests = file_sha256s(source.files(), cache_dir)
    files = [
        {"name": p.name, "kind": file_kind(p, source), "size": p.stat().st_size, "sha256": d} for p, d in digests.items()
    ]
    return {"id": source.ref, "source": source.kind, "files": sorted(files, key=lambda f: f["name"])}


def weights_sha256(record: dict[str, Any]) -> str:
    """The report's weight hash (``models.X.sha256``) recomputed from a bundle's file records."""
    weights = sorted((f["name"], f["sha256"]) for f in record["files"] if f["kind"] == "weights")
    return combine_sha256(weights)


def make_submission(report: dict, teacher: ModelSource | None, analog: ModelSource, cache_dir: Path | None = None) -> dict:
    """Build a bundle from a finished report and the models it measured; validated before it is returned.

    ``teacher`` is None when the report was scored against a teacher reference: the teacher's
    files are then those of the reference's teacher record (``report["reference"]["teacher"]``).
    """
    report = json.loads(render_json(report))  # strict JSON: NaN as null, like fidelity.json
    bundle = {
        "submission_version": SUBMISSION_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "report": report,
        "config": report["config"],
        "environment": report["environment"],
        "packages": {name: package_version(name) for name in PACKAGES},
        "models": {
            "teacher": model_files(teacher, cache_dir) if teacher else reference_model_files(report["reference"]["teacher"]),
            "analog": model_files(analog, cache_dir),
        },
    }
    bundle["sha256"] = content_sha256(bundle)
    problems = schema_errors(bundle)
    if problems:  # a bug in this package, not in the user's input
        raise AssertionError(f"the submission bundle does not follow its own schema: {problems[0]}")
    return bundle


def reference_model_files(teacher: dict[str, Any]) -> dict[str, Any]:
    """The bundle's record of a teacher known from a reference's teacher record (``files``: name -> SHA-256):
    weight files by their suffix, as `ModelSource.weight_files` finds them; a reference records no sizes."""
    files = [
        {"name": name, "kind": name_kind(name, weights=Path(name).suffix in WEIGHT_SUFFIXES), "sha256": digest}
        for name, digest in sorted(teacher["files"].items())
    ]
    return {"id": teacher["id"], "source": teacher["source"], "files": files}


def file_digests(record: dict[str, Any]) -> dict[str, str]:
    """A bundle's model record as a reference's teacher record lists files: name -> SHA-256."""
    return {f["name"]: f["sha256"] for f in record["files"]}


def write_submission(report: dict, teacher: ModelSource | None, analog: ModelSource, path: Path, cache_dir: Path | None = None) -> Path:
    """Write the bundle to ``path`` atomically and return ``path`` (``teacher`` None: see `make_submission`)."""
    bundle = make_submission(report, teacher, analog, cache_dir)
    write_atomic(path, json.dumps(bundle, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return Path(path)


def content_sha256(bundle: dict) -> str:
    """SHA-256 of the bundle's canonical JSON without its own ``sha256`` key."""
    body = {k: v for k, v in bundle.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(bundle: Any) -> list[str]:
    """Every way ``bundle`` breaks the schema, one line each (``at PATH: what``), most relevant first;
    a bundle of another layout version is one line saying so."""
    from jsonschema.exceptions import relevance

    version = bundle.get("submission_version") if isinstance(bundle, dict) else None
    if isinstance(version, int) and version != SUBMISSION_VERSION:
        newer = "a newer" if version > SUBMISSION_VERSION else "an older"
        return [f"it has submission version {version}, written by {newer} pytest-analog; this one reads version "
                f"{SUBMISSION_VERSION}: rerun the gate with --analog-submit under this version"]

    errors = sorted(_validator().iter_errors(bundle), key=relevance, reverse=True)
    return [f"at {error.json_path}: {_short(_message(error))}" for error in errors]


def _message(error) -> str:
    """jsonschema's message; for text that must stay one line (``$defs/line``), what is wrong with it."""
    if error.validator == "not":
        return f"{error.instance!r} holds a control character (text the board shows must be one line)"
    return error.message


def _short(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


def load_submission(path: str | Path) -> dict:
    """Read a bundle file; a missing file, one larger than `MAX_BYTES`, one that is not JSON or one nested deeper
    than `MAX_DEPTH` is an `AnalogError`."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise AnalogError(f"submission {path} is larger than {MAX_BYTES // 2**20} MiB, which no submission bundle is")
        bundle = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_json, parse_float=_finite)
    except FileNotFoundError:
        raise AnalogError(f"submission {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnalogError(f"submission {path} is not a JSON file: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:  # json's parser gives up on arrays or objects nested about a thousand deep
        too_deep = True
    else:
        too_deep = nested_deeper_than(bundle, MAX_DEPTH)
    if too_deep:
        raise AnalogError(f"submission {path} nests deeper than {MAX_DEPTH} levels, which no submission bundle does")
    return bundle


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a float (``1e999``) is an error, not infinity."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is too large for a number")
    return number


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and dicts in ``value`` nest more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False
