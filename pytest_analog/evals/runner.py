"""Run lm-eval on an already-loaded model, with lm-eval's known traps handled.

`HFLM` wraps the loaded model and its tokenizer (without a tokenizer it would
load one by name); batch size and device live on that wrapper, because
`simple_evaluate` ignores them for an LM object. The global seed arguments are
None so the caller's Python, numpy and torch generators are not reseeded, and
their states are restored afterwards, since lm-eval and datasets also draw from
them; the few-shot sampler gets its own seed, so both models see the same examples. HFLM
puts the model in eval mode: its train/eval mode is restored afterwards.
lm-eval names a preloaded model by a path it guesses, so the name is ours.
Its warnings (one "`pretrained` model kwarg is not of type `str`" per model) and its
per-request progress bars stay out of the terminal unless ``verbose``.
`evaluate_vllm` runs the same on lm-eval's vLLM backend from the model's files
(a teacher too large for transformers' forward passes), where vLLM is installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
from typing import Any

from pytest_analog.errors import AnalogError
from pytest_analog.evals.tasks import TaskSet

# lm-eval's own standard errors: closed form for mean metrics; this many resamples for
# the few it bootstraps (its default of 100000 runs for minutes on a process pool).
BOOTSTRAP_ITERS = 1000
# Per-sample fields kept besides the metric values.
_SAMPLE_KEYS = ("doc_id", "filter")


def evaluate(
    model,
    tokenizer,
    tasks: TaskSet,
    *,
    name: str,
    batch_size: int,
    num_fewshot: int | None = None,
    limit: float | None = None,
    fewshot_seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """lm-eval's results for one loaded model, as a JSON-able dict.

    The dict is `simple_evaluate`'s, with ``samples`` reduced to the per-sample
    metric values (``{task: [{"doc_id", "filter", "n_choices"?, METRIC: value}]}``,
    ``n_choices`` for multiple-choice tasks), ``config.model`` set to ``name``,
    and ``lm_eval_version``. Errors are raised either way; ``verbose`` lets lm-eval's
    warnings and progress bars through.
    """
    from lm_eval.models.huggingface import HFLM

    was_training = model.training
    try:
        return _evaluate(
            lambda: HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_batch_size=batch_size),
            tasks, name=name, num_fewshot=num_fewshot, limit=limit, fewshot_seed=fewshot_seed, verbose=verbose,
        )
    finally:
        model.train(was_training)


def evaluate_vllm(
    source,
    tasks: TaskSet,
    *,
    name: str,
    dtype: str,
    batch_size: int,
    num_fewshot: int | None = None,
    limit: float | None = None,
    fewshot_seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """`evaluate` on lm-eval's vLLM backend, reading the model from its local files (`models.ModelSource`)
    in ``dtype``; a model spread over GPUs (``device_map="auto"``) runs tensor-parallel over all of them.

    Raises:
        AnalogError: vLLM is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise AnalogError("benchmarks.backend is vllm, but vLLM is not installed: pip install vllm (or set benchmarks.backend: hf)")

    def vllm_model():
        import torch
        from lm_eval.models.vllm_causallms import VLLM

        path = source.directory / source.gguf_file if source.gguf_file else source.directory
        gpus = max(1, torch.cuda.device_count())
        return VLLM(pretrained=str(path), dtype=dtype, batch_size=batch_size, tensor_parallel_size=gpus, seed=fewshot_seed)

    return _evaluate(vllm_model, tasks, name=name, num_fewshot=num_fewshot, limit=limit, fewshot_seed=fewshot_seed, verbose=verbose)


def _evaluate(make_model, tasks: TaskSet, *, name: str, num_fewshot, limit, fewshot_seed: int, verbose: bool) -> dict[str, Any]:
    """`simple_evaluate` on the lm-eval model ``make_model()`` builds, its results made JSON-able (`evaluate`)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    try:
        with _callers_generators(), contextlib.nullcontext() if verbose else _quiet_lm_eval():
            results = simple_evaluate(
                make_model(),
                tasks=tasks.specs,
                task_manager=TaskManager(include_defaults=bool(tasks.registry)),
                num_fewshot=num_fewshot,
                limit=limit,
                log_samples=True,
                bootstrap_iters=BOOTSTRAP_ITERS,
                random_seed=None,
                numpy_random_seed=None,
                torch_random_seed=None,
                fewshot_random_seed=fewshot_seed,
            )
    except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:  # a task lm-eval cannot build or run
        message = " ".join(str(exc).split())[:300]
        raise AnalogError(f"lm-eval could not run tasks {', '.join(tasks.names)} on {name}: {type(exc).__name__}: {message}") from None
    samples = results.pop("samples")
    results = json.loads(json.dumps(results, default=str))
    results["samples"] = {task: [_compact(s, results["configs"][task]) for s in rows] for task, rows in samples.items()}
    results["config"]["model"] = name
    return results


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm-eval's log records below ERROR dropped and stderr (its and datasets' tqdm bars, and its child
    processes' output) discarded; restored on exit."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    saved = os.dup(2)  # lm-eval's `git describe` writes "fatal: not a git repository" to the process's stderr
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        logger.setLevel(level)


@contextlib.contextmanager
def _callers_generators():
    """Restore the global Python, numpy and torch (CPU and CUDA) random states on exit."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _compact(sample: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    row = {key: sample[key] for key in _SAMPLE_KEYS}
    if config.get("output_type") == "multiple_choice":
        row["n_choices"] = len(sample["filtered_resps"])
    for metric in sample["metrics"]:
        value = sample[metric]
        row[metric] = list(value) if isinstance(value, tuple) else value
    return json.loads(json.dumps(row, default=float))
