"""Wall time of the benchmarks suite over lm-eval alone on the same tasks and models (target <= 1.1).

Both sides run in a fresh Python process and load the same two models the same
way (`models.load_model`). lm-eval alone: `simple_evaluate` on each model over
the shipped task YAMLs by name. The suite: ``pytest --analog-suites=benchmarks``
with a fresh cache directory and a report, so it also pays for resolving the
tasks, hashing the model files, the paired deltas, the cache entry and the
report with its plot. Then a rerun of the suite reads that cache.
Default pair: SmolLM2-135M-Instruct against itself.

    python benchmarks/bench_benchmarks.py [--limit 40] [--student DIR] [--repeats 2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ALONE = """
import sys, time
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from pytest_analog.evals.tasks import SHIPPED_TASKS, shipped_task_names
from pytest_analog.models import load_model
import os
os.chdir(SHIPPED_TASKS)  # lm-eval resolves the YAMLs' relative data paths against the working directory
teacher, student, limit, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for ref in (teacher, student):
    loaded = load_model(ref, device="cpu", dtype="float32")
    simple_evaluate(HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch), tasks=shipped_task_names(),
                    task_manager=TaskManager(include_path=str(SHIPPED_TASKS), include_defaults=False), limit=limit)
"""


def timed(command, cwd) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from pytest_analog.config import load_config
    from pytest_analog.demo import smollm2_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="items per task")
    parser.add_argument("--student", default=None, help="analog model (default: the teacher itself)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    teacher = str(smollm2_gguf())
    student = args.student or teacher
    batch = load_config().benchmarks.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "pytest.ini").write_text("[pytest]\n")
        (work / "analog.yaml").write_text(json.dumps({"benchmarks": {"limit": args.limit}}))
        alone, suite, rerun = [], [], []
        for repeat in range(args.repeats):
            alone.append(timed([sys.executable, "-c", ALONE, teacher, student, str(args.limit), str(batch)], work))
            pytest_args = [sys.executable, "-m", "pytest", "-c", "pytest.ini", "-q", "-p", "no:cacheprovider",
                           f"--analog-teacher={teacher}", f"--analog-student={student}", "--analog-suites=benchmarks",
                           "--analog-config=analog.yaml", f"--analog-cache=cache{repeat}", "--analog-report=out"]
            suite.append(timed(pytest_args, work))
            rerun.append(timed(pytest_args, work))
        report = json.loads((work / "out" / "fidelity.json").read_text())
    tasks = report["benchmarks"]["tasks"]
    print(f"{len(tasks)} tasks, limit {args.limit} items each, batch {batch}; lm-eval {report['benchmarks']['lm_eval_version']}")
    print(f"lm-eval alone {min(alone):.1f} s, suite {min(suite):.1f} s (best of {args.repeats}); "
          f"ratio {min(suite) / min(alone):.2f} (target <= 1.1); cached rerun {min(rerun):.1f} s")


if __name__ == "__main__":
    main()
