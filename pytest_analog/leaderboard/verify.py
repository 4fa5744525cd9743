"""Are these local model files the ones a submission measured?"""

from __future__ import annotations

from pytest_analog.models import resolve_source
from pytest_analog.submission import model_files, schema_errors

CHECKED_KINDS = ("weights", "config", "tokenizer")


def verify_models(bundle: dict, teacher: str, student: str, *, allow_pickle: bool = False) -> dict[str, list[str]]:
    """Re-hash both local models; for each role, the differences from the bundle (empty: the same files).

    Every weight, config and tokenizer file of the submission must exist locally
    with the same SHA-256, and the local model must have no weight file the
    submission lacks. Model cards and other files are not compared.

    Raises:
        AnalogError: a model path cannot be resolved, or the bundle breaks the schema.
    """
    from pytest_analog.errors import AnalogError

    problems = schema_errors(bundle)
    if problems:
        raise AnalogError(f"the submission does not follow the submission schema: {problems[0]}")
    differences = {}
    for role, ref in (("teacher", teacher), ("student", student)):
        submitted = {f["name"]: f for f in bundle["models"][role]["files"] if f["kind"] in CHECKED_KINDS}
        local = {f["name"]: f for f in model_files(resolve_source(ref, allow_pickle=allow_pickle))["files"]}
        found = []
        for name, record in sorted(submitted.items()):
            mine = local.get(name)
            if mine is None:
                found.append(f"{name} ({record['kind']}) is missing")
            elif mine["sha256"] != record["sha256"]:
                found.append(f"{name} differs (local {mine['sha256'][:12]}…, submitted {record['sha256'][:12]}…)")
        found += [f"{n} is a weight file the submission does not list" for n, f in sorted(local.items()) if f["kind"] == "weights" and n not in submitted]
        differences[role] = found
    return differences
