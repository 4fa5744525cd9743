"""A reference built under accelerate's processes (two, on the CPU, through accelerate's debug launcher)
is the reference one process builds: each process runs every other batch, the rows are gathered in order."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pytest_analog.config import load_config
from pytest_analog.models import load_model
from pytest_analog.prompts import load_prompts
from pytest_analog.reference import processes
from pytest_analog.suites.representation.teacher import teacher_part

SETTINGS = {"prompts.max_prompts": 20, "batch_size": 4}  # 5 batches: process 0 runs 3, process 1 runs 2


def _build(teacher: str, out: str) -> None:
    """What each launched process runs: the representation part, saved by the main process."""
    from safetensors.torch import save_file

    config = load_config(**SETTINGS)
    model = load_model(teacher, device="cpu", dtype="float32")
    index, count = processes.processes("cpu")
    Path(out, f"share{index}.json").write_text(json.dumps({"count": count, "share": processes.share(5, "cpu")}))
    part = teacher_part(model, config, prompts=load_prompts("default", 20))
    if processes.is_main("cpu"):
        save_file({k: v.contiguous() for k, v in part.tensors.items()}, str(Path(out, "part.safetensors")))
        Path(out, "meta.json").write_text(json.dumps(part.meta))
    processes.wait("cpu")


def launch(teacher: str, out: str) -> None:
    """Two processes through accelerate's debug launcher (forked: only from a process that has not yet run torch)."""
    from accelerate import debug_launcher

    debug_launcher(functools.partial(_build, teacher, out), num_processes=2)


def test_two_processes_build_the_one_process_part(tmp_path, tiny_dir):
    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = f"from tests.test_reference_processes import launch; launch({str(tiny_dir)!r}, {str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True, timeout=600, capture_output=True)
    shares = [json.loads((tmp_path / f"share{i}.json").read_text()) for i in (0, 1)]
    assert shares == [{"count": 2, "share": [0, 2, 4]}, {"count": 2, "share": [1, 3]}]
    two = load_file(str(tmp_path / "part.safetensors"))
    one = teacher_part(load_model(str(tiny_dir), device="cpu", dtype="float32"), load_config(**SETTINGS),
                       prompts=load_prompts("default", 20))
    assert set(two) == set(one.tensors) and len(two) > 10
    assert all(torch.equal(two[name], one.tensors[name]) for name in one.tensors)
    assert json.loads((tmp_path / "meta.json").read_text()) == json.loads(json.dumps(one.meta))
    assert processes.processes("cpu") == (0, 1)  # this process was never part of a group
