"""Built-in distillation: make an analog of a teacher at a fraction of its parameters.

One entry point, `distill`, serves the ``analog-distill`` command, the
``distilled_analog`` fixture and the demo; `distilled` wraps it in a cache keyed
by the teacher's file hash and the settings, so an analog is distilled once.

    from pytest_analog.distill import DistillConfig, distill
    distill(DistillConfig(teacher="HuggingFaceTB/SmolLM2-135M-Instruct", fraction=0.05), "my-analog")
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pytest_analog import cache
from pytest_analog.distill.config import DistillConfig
from pytest_analog.distill.train import distill
from pytest_analog.models import resolve_source, sha256_files

__all__ = ["DistillConfig", "distill", "distilled"]


def distilled(config: DistillConfig, cache_dir: str | Path, *, progress: bool = True) -> Path:
    """The analog of ``config`` from ``cache_dir/analogs``, distilled there first if absent.

    Keyed by the teacher's file hash and the settings that decide the result;
    an interrupted distillation resumes from its checkpoint on the next call.
    """
    cache_dir = Path(cache_dir)
    source = resolve_source(config.teacher, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code)
    key = cache.cache_key(teacher=sha256_files(source.files(), cache_dir), settings=config.result_dict())
    final = cache_dir / "analogs" / key[:20]
    if (final / "model.safetensors").is_file():
        return final
    partial = final.with_name(final.name + ".partial")
    distill(config, partial, cache_dir=cache_dir, progress=progress)
    shutil.rmtree(partial / ".distill", ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final
