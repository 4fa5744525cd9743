"""The teacher half of the benchmarks run: lm-eval's results of the teacher, per item, as its part."""

from __future__ import annotations

from pytest_analog.evals import TaskSet, evaluate, evaluate_vllm
from pytest_analog.part import Part


def teacher_part(teacher, config, *, tasks: TaskSet, verbose: bool = False):
    """The teacher half of the benchmarks run: lm-eval's results of ``teacher`` (a `LoadedModel`) on
    ``tasks``, per-item samples included, as a `Part` (all JSON, no tensors).

    ``benchmarks.backend: vllm`` runs the teacher on lm-eval's vLLM backend from its local files.
    """
    settings = config.benchmarks
    common = dict(batch_size=settings.batch_size, num_fewshot=settings.num_fewshot, limit=settings.limit,
                  fewshot_seed=config.seed, verbose=verbose)
    if settings.backend == "vllm":
        results = evaluate_vllm(teacher.source, tasks, name=teacher.info["id"], dtype=teacher.info["dtype"], **common)
    else:
        results = evaluate(teacher.model, teacher.tokenizer, tasks, name=teacher.info["id"], **common)
    return Part({}, results)


def part_problem(part, teacher) -> str | None:
    """The benchmarks part: no tensors, and lm-eval's results of the teacher (what `evals.compare` reads)."""
    if part.tensors:
        return f"holds the unexpected tensor {sorted(part.tensors)[0]}"
    missing = [key for key in ("results", "samples", "higher_is_better") if not isinstance(part.meta.get(key), dict)]
    return f"data's {missing[0]} is not an object of lm-eval's results" if missing else None
