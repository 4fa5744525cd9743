"""Which lm-eval tasks to run: the shipped local tasks, task YAML files, or names from lm-eval's registry.

A local task is an lm-eval YAML config over JSONL data. Its ``data_files``
are written relative to the YAML file; lm-eval would resolve them against the
working directory, so `resolve_tasks` loads each YAML (with lm-eval's own
loader: ``include`` and ``!function`` work) and hands lm-eval the config with
absolute data paths.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_analog.errors import AnalogError
from pytest_analog.resources import shipped

SHIPPED_TASKS = shipped("fixtures") / "tasks"


@dataclass
class TaskSet:
    """The tasks of one run, ready for `lm_eval.simple_evaluate`."""

    names: list[str]  # lm-eval task names, in the order given
    configs: list[dict[str, Any]]  # local task configs with absolute data paths
    registry: list[str]  # names lm-eval resolves from its own registry (needs the dataset hub)
    sha256: str  # over the local YAML configs and data files and the registry names

    @property
    def specs(self) -> list:
        """The ``tasks`` argument of `simple_evaluate`."""
        return [*self.configs, *self.registry]


def shipped_task_names() -> list[str]:
    """The local tasks that ship with pytest-analog (``fixtures/tasks/*.yaml``)."""
    return sorted(p.stem for p in SHIPPED_TASKS.glob("*.yaml"))


def resolve_tasks(entries: list[str] | tuple[str, ...]) -> TaskSet:
    """Resolve each entry: a shipped task name, a path to a task YAML, or an lm-eval registry name.

    Raises:
        AnalogError: a task file is missing or malformed, a data file is missing, or a
            name is neither shipped nor (offline, or not) in lm-eval's registry.
    """
    names, configs, registry, digest = [], [], [], hashlib.sha256()
    for entry in entries:
        if entry.endswith((".yaml", ".yml")) or os.sep in entry:
            path = Path(entry).expanduser()
            if not path.is_file():
                raise AnalogError(f"task file {path} does not exist; give a path to an lm-eval task YAML")
        elif entry in shipped_task_names():
            path = SHIPPED_TASKS / f"{entry}.yaml"
        else:
            registry.append(entry)
            names.append(entry)
            digest.update(f"registry:{entry}\n".encode())
            continue
        config, files = _load_local(path.resolve())
        configs.append(config)
        names.append(config["task"])
        digest.update(json.dumps(_load_yaml(path, resolve_func=False), sort_keys=True, default=str).encode())
        for file in files:
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    if registry:
        _check_registry(registry)
    return TaskSet(names, configs, registry, digest.hexdigest())


def _load_yaml(path: Path, *, resolve_func: bool) -> Any:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=resolve_func)


def _load_local(path: Path) -> tuple[dict[str, Any], list[Path]]:
    """A task YAML as a config dict with absolute data paths, and those data files."""
    import yaml

    try:
        config = _load_yaml(path, resolve_func=True)
    except (yaml.YAMLError, ValueError, OSError, ImportError, AttributeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise AnalogError(f"task file {path} is not a valid lm-eval task YAML: {first}") from None
    missing = [key for key in ("task", "dataset_path", "output_type") if key not in config]
    if missing:
        raise AnalogError(f"task file {path} is not an lm-eval task: it has no {', '.join(repr(k) for k in missing)} key")
    kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" not in kwargs:
        return config, []
    data_files = _absolute(kwargs["data_files"], path.parent)
    files = [Path(f) for f in _leaves(data_files)]
    for file in files:
        if not file.is_file():
            raise AnalogError(f"task {config['task']} ({path}): data file {file} does not exist")
    return {**config, "dataset_kwargs": {**kwargs, "data_files": data_files}}, files


def _absolute(value: Any, base: Path) -> Any:
    """``data_files`` (a path, a list, or a split -> path(s) mapping) with each path made absolute."""
    if isinstance(value, dict):
        return {key: _absolute(v, base) for key, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    return str(base / Path(str(value)).expanduser())


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _offline() -> bool:
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes", "on") for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _check_registry(names: list[str]) -> None:
    local = shipped_task_names()
    if _offline():
        name = names[0]
        close = difflib.get_close_matches(name, local, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AnalogError(
            f"task '{name}' is not a shipped task and lm-eval's registry tasks need the dataset hub, which is "
            f"offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); {hint}shipped tasks: {', '.join(local)}"
        )
    from lm_eval.tasks import TaskManager

    known = TaskManager().all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, [*local, *known], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise AnalogError(f"task '{name}' is neither a shipped task ({', '.join(local)}) nor in lm-eval's registry{hint}")
