"""Benchmark submissions: hashing a model for a bundle (cold, then from the hash memo) and building a board.

Run: python benchmarks/bench_submission.py [--entries N]

Hashing reads every byte once (the SmolLM2-135M-Instruct GGUF, about 100 MB);
with a cache folder the per-file digests are remembered, so a second bundle of
the same files (and the fidelity run's own weight hash) costs no reread.
Building the board validates N bundles (schema, own hash, weight hashes,
every criterion) and renders the page.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

from pytest_analog.demo import smollm2_gguf
from pytest_analog.leaderboard import build_board
from pytest_analog.leaderboard.page import render_page
from pytest_analog.models import resolve_source
from pytest_analog.submission import content_sha256, model_files, weights_sha256


def _bundle(files) -> dict:
    """A minimal valid bundle around ``files`` (the numbers are placeholders; the checks are what is timed)."""
    record = {"id": "x", "parameters": 100, "sha256": weights_sha256(files)}
    criteria = [
        {"id": f"representation::test_cka[teacher_layer={i}]", "suite": "representation", "metric": "cka", "value": 0.4 + i / 100,
         "threshold": 0.5, "direction": "min", "gated": True, "passed": 0.4 + i / 100 >= 0.5}
        for i in range(30)
    ]
    gated_passed = sum(c["passed"] for c in criteria)
    config = {"criteria": {"cka": {"min": 0.5}}}
    report = {
        "schema_version": 1, "created": "2025-01-01T00:00:00Z", "tool": {"name": "pytest-analog", "version": "0.1.0"},
        "verdict": "fail", "environment": {}, "config": config, "criteria": criteria,
        "summary": {"gated": 30, "passed": gated_passed, "failed": 30 - gated_passed, "informational": 0},
        "models": {"teacher": dict(record), "student": {**record, "parameters": 3}, "parameter_fraction": 0.03},
    }
    return {"submission_version": 1, "created": "2025-01-01T00:00:00Z", "report": report, "config": config,
            "environment": {}, "packages": {"pytest-analog": None, "torch": None, "transformers": None},
            "models": {"teacher": copy.deepcopy(files), "student": copy.deepcopy(files)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500, help="bundles on the board (default: 500)")
    args = parser.parse_args()
    source = resolve_source(str(smollm2_gguf()))
    size = sum(p.stat().st_size for p in source.files()) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        files = model_files(source, cache)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        model_files(source, cache)
        warm = time.perf_counter() - start
        print(f"hash {size:.0f} MiB ({len(files['files'])} file): cold {cold:.2f} s ({size / cold:.0f} MiB/s), from the memo {warm * 1e3:.1f} ms")

        folder = Path(tmp) / "submissions"
        folder.mkdir()
        base = _bundle(files)
        for i in range(args.entries):
            bundle = copy.deepcopy(base)
            bundle["models"]["analog"]["files"][0]["sha256"] = f"{i:064x}"  # a distinct analog per entry
            bundle["report"]["models"]["analog"]["sha256"] = weights_sha256(bundle["models"]["analog"])
            bundle["sha256"] = content_sha256(bundle)
            (folder / f"{i:04d}.json").write_text(json.dumps(bundle))
        start = time.perf_counter()
        board = build_board(folder)
        page = render_page(board)
        seconds = time.perf_counter() - start
        assert len(board.entries) == args.entries and not board.rejected, board.rejected[:1]
        print(f"build {args.entries} bundles (30 criteria each): {seconds:.2f} s, {seconds / args.entries * 1e3:.1f} ms per bundle, "
              f"page {len(page) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
