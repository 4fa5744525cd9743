"""What is checked before any test, so that bad input is a usage error (exit 4) and no model loads for nothing.

Both models (resolved, configs read, safetensors headers, tokenizer code and
size; no weights loaded) or the teacher's reference, the prompt set and layers,
the memory the config needs, each wanted suite's own inputs (`Suite.check`) and,
against a reference, that it holds a part for each wanted run.
"""

from __future__ import annotations

from pytest_analog.errors import AnalogError
from pytest_analog.layers import gated_layers, layer_map
from pytest_analog.memory import available_memory, memory_problem
from pytest_analog.models import check_files, check_vocab, read_config, resolve_device, resolve_source
from pytest_analog.prompts import load_prompts
from pytest_analog.reference import store
from pytest_analog.reference.teacher import TeacherHalf
from pytest_analog.runs import Shape


def check_inputs(session) -> None:
    """Resolve and check every input of ``session`` (an `AnalogSession` with models given); sets its
    ``model_sources``, ``depths`` and ``teacher_half``.

    Raises:
        AnalogError: the first bad input, one line.
    """
    settings, config = session.settings, session.analog_config
    resolve_device(settings.device)
    reference = store.load(settings.reference) if settings.reference else None
    sources, depths, widths = [], [], []
    if reference is not None:
        width = reference.teacher.get("hidden_size")
        sources, depths, widths = [None], [reference.teacher["num_layers"]], [width if isinstance(width, int) else 0]
    for ref in (settings.student,) if reference else (settings.teacher, settings.student):
        with session.showing_progress():  # a hub download shows its progress
            sources.append(resolve_source(ref, allow_pickle=settings.allow_pickle, trust_remote_code=settings.trust_remote_code))
        model_config = read_config(sources[-1], trust_remote_code=settings.trust_remote_code)
        check_files(sources[-1], trust_remote_code=settings.trust_remote_code)
        check_vocab(sources[-1], model_config, trust_remote_code=settings.trust_remote_code)
        depths.append(model_config.get_text_config().num_hidden_layers)
        widths.append(model_config.get_text_config().hidden_size)
    prompts = len(load_prompts(config.prompts.set, config.prompts.max_prompts).texts)
    gated = gated_layers(config, depths[0])
    layer_map(config, gated, *depths)
    wanted = session.wanted()
    runs = {suite.run.name: suite.run for suite in wanted if suite.run is not None}
    shape = Shape(prompts=prompts, widths=(widths[0], widths[1]), gated_layers=len(gated))
    sizes = {key: size for run in runs.values() for key, size in run.memory(config, shape).items()}
    problem = memory_problem(sizes, available_memory())
    if problem:
        raise AnalogError(problem)
    session.model_sources, session.depths = tuple(sources), (depths[0], depths[1])
    session.teacher_half = TeacherHalf(
        session, reference=reference, source=sources[0], load=lambda: session.load(sources[0]), cache_dir=session.cache_dir,
        device=settings.device, dtype=settings.dtype,
    )
    for suite in wanted:
        if suite.check is not None:
            suite.check(session)
    if reference is not None:  # a reference that cannot serve this run is refused before the analog loads
        for name in sorted(runs):
            session.teacher_half.part(runs[name])
