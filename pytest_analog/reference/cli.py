"""``analog-reference``: build a teacher reference, or verify one against its teacher.

Exit codes: 0 success (verify: every part is the teacher's); 1 verify found a
part, file or setting that is not the teacher's; 4 bad input (a missing or
changed reference, a bad option, a model that cannot be used); 130 interrupted
(Ctrl-C: a reference folder being built is left as it was).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_analog import registry
from pytest_analog.config import load_config
from pytest_analog.errors import AnalogError
from pytest_analog.models import check_files, load_model, read_config, resolve_device, resolve_source
from pytest_analog.options import parse_device, parse_dtype, parse_positive_int, parse_suites, parse_tasks
from pytest_analog.reference import processes, store
from pytest_analog.reference.teacher import TeacherHalf
from pytest_analog.runs import Context, Run
from pytest_analog.suite import Suite

USAGE_ERROR = 4  # as pytest's usage errors
INTERRUPTED = 130  # as a shell reports a command that SIGINT ended


@dataclass(frozen=True)
class BuildOptions:
    """The gate options a teacher half reads (`Run.teacher_inputs` reads them as from the session)."""

    suites: tuple[str, ...]
    tasks: tuple[str, ...] | None
    max_prompts: int | None


class BuildContext(Context):
    """What `Run.teacher_inputs` reads, as the gate's session holds it, for a build outside pytest."""

    def __init__(self, config, options: BuildOptions, teacher_depth: int):
        self.analog_config, self.settings, self.depths = config, options, (teacher_depth, None)
        self.verbose, self.teacher_half = False, None


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one line and exit 4, as every other bad input here (argparse's own: usage, exit 2)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.splitlines()[0].removeprefix("``analog-reference``: ")
    parser = _Parser(prog="analog-reference", description=summary[0].upper() + summary[1:])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="run the teacher once and write what every criterion needs of it")
    build.add_argument("--out", type=Path, required=True, metavar="REF", help="the reference folder to write")
    verify = commands.add_parser("verify", help="recompute a reference from its teacher and compare, part by part")
    verify.add_argument("reference", type=Path, metavar="REF")
    for command in (build, verify):
        _gate_options(command)
    args = parser.parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _verify(args)
    except AnalogError as exc:
        print(f"analog-reference: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        left = f"; {args.out} is as it was" if args.command == "build" else ""
        print(f"analog-reference: interrupted{left}", file=sys.stderr)
        return INTERRUPTED


def _gate_options(parser) -> None:
    """The gate's own options that decide the teacher's contribution (as --analog-NAME in pytest)."""
    parser.add_argument("--teacher", required=True, metavar="MODEL", help="the teacher: a hub id, a model directory or a .gguf file")
    parser.add_argument("--config", type=Path, metavar="YAML", help="the gate's config (the same file the gate will read)")
    parser.add_argument("--max-prompts", type=_parsed(parse_positive_int), metavar="N", help="as --analog-max-prompts")
    parser.add_argument("--suites", default="all", metavar="LIST", help="suites to cover: all (default) or a comma-separated list")
    parser.add_argument("--conftest", type=Path, action="append", default=[], metavar="FILE",
                        help="a conftest.py whose pytest_analog_suites hook adds suites (the gate's own conftest)")
    parser.add_argument("--tasks", type=_parsed(parse_tasks), metavar="LIST", help="as --analog-tasks")
    parser.add_argument("--device", type=_parsed(parse_device), default="auto", metavar="DEVICE", help="auto|cpu|cuda|cuda:N")
    parser.add_argument("--dtype", type=_parsed(parse_dtype), default="auto", metavar="DTYPE", help="auto|float32|bfloat16|float16")
    parser.add_argument("--cache", type=Path, metavar="DIR", help="remember file hashes and parts here (as --analog-cache)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run custom model code from the teacher's repository")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle checkpoints, which can run code when loaded")


def _parsed(parse):
    def parsed(value: str):
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parsed.__name__ = parse.__name__.lstrip("_")
    return parsed


def _suites(args) -> tuple[tuple[Suite, ...], tuple[Suite, ...]]:
    """The known suites (the installed ones and those of each --conftest), and those --suites names."""
    known = registry.gathered([_conftest_suites(path) for path in args.conftest])
    try:
        names = parse_suites(args.suites, [suite.name for suite in known])
    except ValueError as exc:
        raise AnalogError(f"--suites: {exc}") from None
    return known, tuple(suite for suite in known if suite.name in names)


def _conftest_suites(path: Path):
    """What the ``pytest_analog_suites`` hook of the conftest at ``path`` returns (the file runs: it is the user's own)."""
    spec = importlib.util.spec_from_file_location(f"analog_conftest_{len(sys.modules)}", path) if path.is_file() else None
    if spec is None:
        raise AnalogError(f"--conftest={path}: no such Python file; give the conftest.py that registers your suites")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    hook = getattr(module, "pytest_analog_suites", None)
    if hook is None:
        raise AnalogError(f"--conftest={path}: it defines no pytest_analog_suites hook")
    return hook()


def _teacher_half(args, known, suites):
    """The teacher's half of a gate with these options: resolved and checked, nothing loaded yet."""
    overrides = {}
    if args.max_prompts:
        overrides.update({"prompts.max_prompts": args.max_prompts, "benchmarks.limit": args.max_prompts})
    if args.tasks:
        overrides["benchmarks.tasks"] = list(args.tasks)
    config = load_config(args.config, known, **overrides)
    resolve_device(args.device)
    source = resolve_source(args.teacher, allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)
    check_files(source, trust_remote_code=args.trust_remote_code)
    depth = read_config(source, trust_remote_code=args.trust_remote_code).get_text_config().num_hidden_layers
    context = BuildContext(config, BuildOptions(tuple(s.name for s in suites), args.tasks, args.max_prompts), depth)

    def load():
        _say(f"loading the teacher {args.teacher}")
        return load_model(source, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                          allow_pickle=args.allow_pickle, cache_dir=args.cache)

    return TeacherHalf(context, source=source, load=load, cache_dir=args.cache, device=args.device, dtype=args.dtype)


def _runs(suites) -> list[Run]:
    """The runs ``suites`` read, once each."""
    return list(registry.runs(suites).values())


def _build(args) -> int:
    problem = store.folder_problem(args.out)
    if problem:
        raise AnalogError(f"--out: {problem}")
    known, suites = _suites(args)
    half = _teacher_half(args, known, suites)
    runs = _runs(suites)
    if not runs:
        raise AnalogError(f"--suites {args.suites} reads nothing of the teacher (compliance needs no reference); "
                          "name a suite such as representation")
    main = processes.is_main(args.device)  # under accelerate launch: the one that writes
    for spec in runs:
        if not (main or spec.parallel):
            continue
        started = time.perf_counter()
        _say(f"building part {spec.name!r}")
        half.part(spec)
        _say(f"part {spec.name!r} done in {time.perf_counter() - started:.1f} s")
    if not main:
        processes.wait(args.device)
        return 0
    written = store.write(half.reference(), args.out)
    processes.wait(args.device)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"teacher reference {written.id} ({', '.join(sorted(half.parts))}; {size / 2**20:.1f} MiB): {args.out}")
    return 0


def _verify(args) -> int:
    given = store.load(args.reference)
    known, suites = _suites(args)
    half = _teacher_half(args, known, suites)
    lines, ok = [], True
    record = given.teacher.get("files", {})
    actual = {name: digest for name, digest in half.record()["files"].items()}
    same_files = record == actual
    ok &= same_files
    lines.append(f"teacher files: {'the same' if same_files else 'differ: ' + ', '.join(sorted(n for n in set(record) | set(actual) if record.get(n) != actual.get(n)))}")
    tokenizer = given.tokenizer_files() == half.tokenizer_files()
    ok &= tokenizer
    lines.append(f"tokenizer: {'the same files' if tokenizer else 'its files differ from the teacher tokenizer'}")
    fresh = TeacherHalf(half.context, source=half.source, load=half.model, cache_dir=None, device=args.device, dtype=args.dtype)
    for spec in _runs(suites):
        if not given.has(spec.name):
            continue
        key, _ = half.key(spec)
        stored = given.part(spec.name, key, check=spec.part_problem)
        _say(f"recomputing part {spec.name!r}")
        problem = part_difference(stored, fresh.part(spec))
        ok &= problem is None
        lines.append(f"{spec.name}: {'recomputed, the same' if problem is None else 'recomputed, differs: ' + problem}")
    for line in lines:
        print(line)
    print(f"reference {given.id}: {'is' if ok else 'is NOT'} the teacher {args.teacher}'s")
    return 0 if ok else 1


RTOL = 1e-5  # what verify lets a part's centred rows move, relative (see `part_difference`)
NOISE = 1e-6  # float32 recomputation elsewhere (another BLAS, other threads): relative to each value


def part_difference(stored, fresh, *, rtol: float = RTOL) -> str | None:
    """Where a recomputed part differs from a stored one beyond recomputation noise, or None.

    A floating tensor of rows [n, d] agrees when each element differs by at most `NOISE` (stored in half
    precision: one storage step, ``eps``) of its own magnitude plus ``rtol / sqrt(d)`` of its row's
    centred norm: the distance from the column means, floored at the rows' RMS so that a row at the mean
    is not held to nothing. So an accepted part's centred rows, what CKA, kNN and cosine geometry read,
    move by at most ``rtol`` beyond recomputation noise, whatever a constant outlier dimension such as
    SmolLM2's (the old rule, 1e-3 of the largest magnitude, let every element move by 1e-3 of the
    outlier). 1-D tensors: each element within ``rtol`` of max(|value|, RMS) plus the noise. Integer
    tensors and the JSON data's non-numbers must be equal; its numbers agree within ``rtol`` relative.
    """
    import torch

    if set(stored.tensors) != set(fresh.tensors):
        return f"tensors {sorted(set(stored.tensors) ^ set(fresh.tensors))} are in one part only"
    for name in sorted(stored.tensors):
        a, b = stored.tensors[name], fresh.tensors[name].to(stored.tensors[name].dtype)
        if a.shape != b.shape:
            return f"tensor {name} has shape {tuple(a.shape)}, recomputed {tuple(b.shape)}"
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return f"tensor {name} differs"
            continue
        if not a.numel():
            continue
        noise = NOISE if torch.finfo(a.dtype).bits > 16 else torch.finfo(a.dtype).eps  # half: one storage step
        a, b = a.double(), b.double()
        rows = b.reshape(len(b), -1) if b.ndim >= 2 else b.reshape(-1, 1)
        scale = (rows - rows.mean(dim=0)).norm(dim=1) / rows.shape[1] ** 0.5 if b.ndim >= 2 else rows.abs()[:, 0]
        scale = scale.clamp(min=float(scale.square().mean().sqrt()))
        gap = (a.reshape(rows.shape) - rows).abs()
        excess = gap - (rtol * scale[:, None] + noise * rows.abs())
        worst = int(torch.argmax(excess))
        if excess.flatten()[worst] > 0:
            row, column = divmod(worst, rows.shape[1])
            where = f"row {row}, column {column}" if b.ndim >= 2 else f"element {row}"
            return f"tensor {name} differs at {where} by {float(gap.flatten()[worst]):.3g}, beyond recomputation noise"
    return _json_difference(stored.meta, fresh.meta, rtol, "data")


def _json_difference(a, b, rtol: float, where: str) -> str | None:
    """Where two JSON values differ (numbers: beyond ``rtol`` relative), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where} has other keys ({sorted(set(a) ^ set(b))[:3]})"
        return next((d for k in sorted(a) if (d := _json_difference(a[k], b[k], rtol, f"{where}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where} has {len(a)} entries, recomputed {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _json_difference(x, y, rtol, f"{where}[{i}]"))), None)
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and (a == b or abs(a - b) <= rtol * max(abs(a), abs(b))):
            return None
        return f"{where} is {a!r}, recomputed {b!r}"
    return None if a == b else f"{where} is {a!r}, recomputed {b!r}"


def _say(text: str) -> None:
    print(f"analog-reference: {text}", file=sys.stderr, flush=True)
