"""Are these local model files, or this teacher reference, the ones a submission measured?"""

from __future__ import annotations

from pytest_analog.errors import AnalogError
from pytest_analog.leaderboard.board import check_submission
from pytest_analog.models import resolve_source
from pytest_analog.submission import model_files, schema_errors

# What the report's numbers depend on; model cards, licences and other files are not compared.
CHECKED_KINDS = ("weights", "config", "tokenizer")


def verify_models(bundle: dict, teacher: str | None, analog: str, *, allow_pickle: bool = False) -> dict[str, list[str]]:
    """Check the bundle itself, then re-hash the local models (the analog only when ``teacher`` is None).

    Returns, for ``submission``, why the bundle could not go on the board (its
    own sha256, its report against its file hashes and thresholds; see
    `check_submission`), and for ``teacher`` and ``analog``, how the local
    files differ from the bundle's. Empty lists: the same files as submitted.
    Every weight, config and tokenizer file, by the bundle's kind or the local
    one, must be in both with the same SHA-256: a bundle that leaves out a
    config or tokenizer entry does not vouch for the local file.

    Raises:
        AnalogError: a model path cannot be resolved, or the bundle breaks the schema.
    """
    problems = schema_errors(bundle)
    if problems:
        raise AnalogError(f"the submission does not follow the submission schema: {problems[0]}")
    reason = check_submission(bundle)
    differences = {"submission": [reason] if reason else []}
    for role, ref in (("teacher", teacher), ("analog", analog)) if teacher else (("analog", analog),):
        submitted = {f["name"]: f for f in bundle["models"][role]["files"]}
        local = {f["name"]: f for f in model_files(resolve_source(ref, allow_pickle=allow_pickle))["files"]}
        checked = {n for files in (submitted, local) for n, f in files.items() if f["kind"] in CHECKED_KINDS}
        found = []
        for name in sorted(checked):
            mine, theirs = local.get(name), submitted.get(name)
            if mine is None:
                found.append(f"{name} ({theirs['kind']}) is missing")
            elif theirs is None:
                found.append(f"{name} is a {mine['kind']} file the submission does not list")
            elif mine["sha256"] != theirs["sha256"]:
                found.append(f"{name} differs (local {mine['sha256'][:12]}…, submitted {theirs['sha256'][:12]}…)")
        differences[role] = found
    return differences


def reference_problem(bundle: dict, reference) -> str | None:
    """Why ``reference`` (a loaded `reference.store.Reference`) is not the one the bundle was scored against, or None."""
    scored = bundle["report"].get("reference")
    if scored is None:
        return "the submission names no teacher reference (no suite read the teacher's part); verify it with --teacher"
    if reference.id != scored["id"]:
        return f"it is reference {reference.id[:12]}…, the submission was scored against reference {scored['id'][:12]}…"
    if reference.teacher != scored["teacher"]:
        return "its id is the submission's, but the submission's record of its teacher is not the reference's"
    return None
