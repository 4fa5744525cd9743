"""``analog-distill``: distil an analog of a teacher into a release folder.

    analog-distill --teacher HuggingFaceTB/SmolLM2-135M-Instruct --fraction 0.05 --out my-analog
    analog-distill --config my-analog/distill_config.json --out again   # rerun a release's exact settings

Every setting of `DistillConfig` is a flag (``--max-steps``, ``--align cosine``,
...); flags override a ``--config`` file (JSON or YAML).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import re
import signal
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from pytest_analog.distill import checkpoint, distill
from pytest_analog.distill.config import DistillConfig
from pytest_analog.distill.train import WORK
from pytest_analog.errors import AnalogError


def _comments() -> dict[str, str]:
    """Each setting's comment in `DistillConfig`'s source: the flag's help."""
    source = inspect.getsource(DistillConfig)
    return {k: v.replace("%", "%%") for k, v in re.findall(r"^\s+(\w+): [^#\n]*#\s*(.*)$", source, flags=re.M)}


def build_parser() -> argparse.ArgumentParser:
    summary = __doc__.splitlines()[0].removeprefix("``analog-distill``: ")  # the docstring's markup stays out of --help
    parser = argparse.ArgumentParser(prog="analog-distill", description=summary[0].upper() + summary[1:])
    parser.add_argument("--out", required=True, help="output folder: the analog's release (resumes a run interrupted there)")
    parser.add_argument("--config", help="JSON or YAML file of settings (a release's distill_config.json)")
    parser.add_argument("--cache", help="folder that keeps the teacher's targets for later runs (default: inside --out)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    helps = _comments()
    for f in fields(DistillConfig):
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=helps.get(f.name))
            continue
        kind = {int: int, float: float}.get(type(default), float if f.name == "max_seconds" else str)
        given = "required, here or in --config" if f.default is MISSING else f"default: {'unset' if default is None else default}"
        parser.add_argument(flag, type=kind, default=None, metavar=f.name.upper(), help=f"{helps.get(f.name, '')} ({given})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _read_settings(args.config) if args.config else {}
        settings.update({f.name: getattr(args, f.name) for f in fields(DistillConfig) if getattr(args, f.name) is not None})
        if "teacher" not in settings:
            parser.error("give --teacher (a hub id, model folder or .gguf file) or a --config that names one")
        config = DistillConfig.from_dict(settings)
        if args.quiet:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        with _terminate_as_interrupt():
            out = distill(config, args.out, cache_dir=args.cache, progress=not args.quiet)
    except AnalogError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"analog-distill: interrupted; {_resume_hint(Path(args.out))}", file=sys.stderr)
        return 130
    record = json.loads((Path(out) / "training.json").read_text())
    shape = record["shape"]
    print(
        f"analog-distill: {out}: {shape['parameters']:,} parameters ({shape['fraction']:.2%} of the teacher), "
        f"held-out KL {record['heldout_kl_before']:.3f} -> {record['heldout_kl_after']:.3f} nats (step {record['best_step']}), "
        f"{record['steps']} steps in {record['train_seconds']} s" + (" (stopped early)" if record["stopped_early"] else "")
    )
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``) raises KeyboardInterrupt as Ctrl-C does, so half-written files are removed on the way out."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resume_hint(out: Path) -> str:
    meta = checkpoint.peek(out / WORK / "checkpoints")
    if meta is None:
        return "run the same command again to start over (nothing was checkpointed yet)"
    return f"run the same command again to resume from the checkpoint at step {meta['step']}"


def _read_settings(path: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AnalogError(f"cannot read settings file {path}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(data, dict):
        raise AnalogError(f"settings file {path} must hold a mapping of setting: value")
    return data


if __name__ == "__main__":
    sys.exit(main())
