"""Massive-activation rows, the influence figure and a report that agrees with itself (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_analog import registry
from pytest_analog import metrics
from pytest_analog.criterion import Criterion, Gate, Measured
from pytest_analog.suites.representation.analog import _leave_out
from pytest_analog.massive import TopRows
from tests.test_metrics_cka import ref_linear_cka

# -- a planted massive row, streamed in batches as `representation.measure` does ----------------------


MASSIVE = [123, 321]


def _planted(n=600, d=12, seed=0):
    """Teacher layers 1 and 2, analog layer 1: unrelated except two rows, huge in both, that decide CKA
    (as `ĠSam` and `Ġlist` did in SmolLM2-135M-Instruct: the debiased CKA pairs distinct rows)."""
    rng = np.random.default_rng(seed)
    x = {1: rng.normal(size=(n, d)), 2: rng.normal(size=(n, d))}
    y = rng.normal(size=(n, 7))
    x[1][MASSIVE] = 400 * np.eye(d)[0]  # massive at teacher layer 1 only
    y[MASSIVE] = 400 * np.eye(7)[0]
    return x, y


def _stream(x, y, *, multiple, exclude, batch=64):
    mapped = {1: 1, 2: 1}
    streams = {("analog", i): metrics.StreamingLinearCKA() for i in (1, 2)}
    top = TopRows([1, 2], len(y))
    for start in range(0, len(y), batch):
        rows = slice(start, start + batch)
        t = {i: torch.from_numpy(x[i][rows]) for i in (1, 2)}
        s = torch.from_numpy(y[rows])
        for i in (1, 2):
            streams["analog", i].update(t[i], s)
        top.update(start, {i: t[i].norm(dim=1).numpy() for i in (1, 2)},
                   lambda local: {("teacher", 1): t[1][local], ("teacher", 2): t[2][local], ("analog", 1): s[local]})
    found = top.finish(multiple, exclude)
    without = _leave_out(streams, top, found, mapped, debiased=True)
    return {i: streams["analog", i].compute(debiased=True) for i in (1, 2)}, without, found, top


def test_a_planted_massive_row_decides_cka_and_the_default_leaves_it_out_at_every_layer():
    x, y = _planted()
    rest = np.delete(np.arange(len(y)), MASSIVE)
    assert ref_linear_cka(x[1], y, True) > 0.9  # two rows of 600 decide the value ...
    assert abs(ref_linear_cka(x[1][rest], y[rest], True)) < 0.05  # ... of unrelated data

    values, _, found, _ = _stream(x, y, multiple=20, exclude=True)
    assert found.rows.tolist() == MASSIVE and found.excluded
    assert found.massive[1].tolist() == MASSIVE and found.massive[2].tolist() == []
    for i in (1, 2):  # the same row set at every layer
        assert values[i] == pytest.approx(ref_linear_cka(x[i][rest], y[rest], True), abs=1e-9)


def test_keep_keeps_the_row_and_still_finds_it():
    x, y = _planted()
    values, _, found, _ = _stream(x, y, multiple=20, exclude=False)
    assert found.rows.tolist() == MASSIVE and not found.excluded
    assert values[1] == pytest.approx(ref_linear_cka(x[1], y, True), abs=1e-9)


def test_the_influence_figure_leaves_out_the_top_rows_by_teacher_norm_among_those_kept():
    x, y = _planted(n=2500)  # m = ceil(0.1 % of 2500) = 3 rows
    _, without, found, top = _stream(x, y, multiple=20, exclude=True)
    assert top.m == 3
    for i in (1, 2):
        norms = np.linalg.norm(x[i], axis=1)
        norms[MASSIVE] = -1  # left out already
        keep = np.setdiff1d(np.arange(len(y)), [*MASSIVE, *np.argsort(-norms)[:3]])
        assert found.influence[i].tolist() == sorted(np.argsort(-norms)[:3].tolist())
        assert without["analog", i] == pytest.approx(ref_linear_cka(x[i][keep], y[keep], True), abs=1e-9)


def test_more_massive_rows_than_a_handful_are_kept_and_the_report_says_why():
    rng = np.random.default_rng(3)
    x = {1: rng.normal(size=(400, 6)), 2: rng.normal(size=(400, 6))}
    x[1][:50] *= 100  # an eighth of the rows: a feature of the layer
    _, _, found, _ = _stream(x, rng.normal(size=(400, 5)), multiple=20, exclude=True)
    assert len(found.rows) == 50 and not found.excluded and "kept" in found.note


def test_subtract_undoes_update_exactly():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 5)) + 50, rng.normal(size=(300, 4))
    m, part = metrics.StreamingLinearCKA(), metrics.StreamingLinearCKA()
    m.update(x, y)
    part.update(x[200:], y[200:])
    m.subtract(part)
    assert m.n == 200
    assert m.compute(debiased=True) == pytest.approx(metrics.linear_cka(x[:200], y[:200], debiased=True), abs=1e-10)
    with pytest.raises(ValueError, match="cannot remove"):
        part.subtract(m)


# -- estimates inside their intervals -----------------------------------------------------------


def test_a_skewed_bootstrap_interval_is_moved_onto_its_estimate():
    rng = np.random.default_rng(5)
    replicates = 0.005 + rng.gamma(1.0, 0.005, size=200)  # a chance level near 0: skewed, above the estimate
    estimate = 0.00321
    low, _ = metrics.percentile_interval(replicates)
    assert low > estimate  # the percentile interval misses its own estimate
    moved = metrics.centre(replicates, estimate)
    low, high = metrics.percentile_interval(moved)
    assert low <= estimate <= high and np.median(moved) == pytest.approx(estimate)
    assert high - low == pytest.approx(np.subtract(*metrics.percentile_interval(replicates)[::-1]))  # same width


# -- one headline in every renderer -------------------------------------------------------------


def _corrected_report():
    criterion = Criterion(
        "representation::test_cka[teacher_layer=11]", "representation", "cka",
        Measured(0.3997, (0.38, 0.42), 0.077, (0.06, 0.09), (0.33, 0.37)), Gate("min", 0.5, "corrected"),
        {"teacher_layer": 11, "analog_layer": 1},
    ).to_dict()
    return {"schema_version": 2, "verdict": "fail", "criteria": [criterion]}, criterion


def test_the_headline_is_the_score_the_threshold_reads_in_every_renderer():
    from pytest_analog.report import render_html, render_markdown, terminal_lines
    from pytest_analog.report.formatting import fmt_value

    report, c = _corrected_report()
    corrected = fmt_value(c["corrected"])
    assert corrected != "0.3997"
    md = render_markdown(report, registry.built_in())
    row = next(line for line in md.splitlines() if line.startswith("| `representation::test_cka"))
    cells = [x.strip() for x in row.split("|")[1:-1]]
    assert cells[1].startswith(corrected + " [0.33, 0.37]") and cells[2].startswith("0.3997") and cells[3].startswith("0.077")
    page = render_html(report, registry.built_in())
    banner = page[page.index('<div class="banner'):page.index("</header>")]
    assert f"{corrected} [0.33, 0.37] corrected (raw 0.3997, chance 0.077), needs ≥ 0.5 corrected" in banner
    table = [line for line in terminal_lines(report) if "test_cka" in line][0].split()
    assert table[1:4] == [corrected, "0.3997", "0.077"] and "corrected" in table


def test_markdown_and_html_show_the_same_massive_rows_and_influence():
    from pytest_analog.report import render_html, render_markdown

    section = {
        "rule": "norm > 20 x median", "excluded": True, "by_layer": {"15": 1},
        "rows": [{"token": "a|<b>", "prompt": 3, "position": 1, "norm_ratio": {"15": 86.34, "19": 68.0}}],
        "influence": {"15": {"rows": 2, "value": 0.75, "shift": -0.25, "corrected_shift": None}},
    }
    report = {"schema_version": 2, "verdict": "pass", "criteria": [], "massive": section}
    note = "Influence: the gated CKA when, in addition, the top 0.1 % of its rows by teacher norm are left out."
    md = render_markdown(report, registry.built_in())
    assert "| token | prompt | position | teacher layers (norm / median) |" in md
    assert "| `a\\|<b>` | 3 | 1 | 15 (86.34×), 19 (68×) |" in md
    assert f"\n\n{note}" in md and "| 15 | 2 | 0.75 | -0.25 | — |" in md
    page = render_html(report, registry.built_in())
    assert ("<tr><td><code>a|&lt;b&gt;</code></td><td class=\"num\">3</td><td class=\"num\">1</td>"
            "<td>15 (86.34×), 19 (68×)</td></tr>") in page
    assert f"<p>{note}" in page
    assert "".join(f'<td class="num">{v}</td>' for v in ("15", "2", "0.75", "-0.25", "—")) in page


# -- steering reads a block output ------------------------------------------------------------


def test_the_steering_layer_is_never_the_embedding_output_unless_named():
    from types import SimpleNamespace

    from pytest_analog.layers import best_block_match
    from pytest_analog.suites.steering.layers import layer_rule, steering_layers

    matrix = np.array([[0.9, 0.2, 0.1], [0.8, 0.3, np.nan], [0.1, 0.2, 0.7]])  # layer 0 is the best CKA match twice
    assert best_block_match(matrix) == [1, 1, 2]
    best = SimpleNamespace(teacher_layers=[0, 1, 2], analog_layers="best_match")
    assert steering_layers(best, 30, 2, best_match=best_block_match(matrix)) == {0: 1, 1: 1, 2: 2}
    proportional = SimpleNamespace(teacher_layers=[1, 10], analog_layers="proportional")
    assert steering_layers(proportional, 30, 2) == {1: 1, 10: 1}  # round(1 * 2 / 30) = 0 would be the embedding
    named = SimpleNamespace(teacher_layers=[1], analog_layers={1: 0})
    assert steering_layers(named, 30, 2) == {1: 0}
    assert "never" in layer_rule(best) and layer_rule(named) == "named in steering.analog_layers"


# -- through `representation.measure` on tiny models ---------------------------------------------------


@pytest.fixture(scope="module")
def measured(tiny_dir, tiny_random_dir):
    """A tiny teacher whose embedding output is made massive at one rare token, against another tiny model."""
    from collections import Counter

    from pytest_analog.config import load_config
    from pytest_analog.suites.representation.analog import measure
    from pytest_analog.suites.representation.teacher import teacher_part
    from pytest_analog.models import load_pair, resolve_source
    from pytest_analog.prompts import load_prompts
    from pytest_analog.controls import control_model

    pair = load_pair(resolve_source(str(tiny_dir)), resolve_source(str(tiny_random_dir)), device="cpu", dtype="float32")
    prompts = load_prompts("default", 24)
    counts = Counter(t for text in prompts.texts for t in pair.teacher.tokenizer(text)["input_ids"][1:])
    token = next(t for t, n in sorted(counts.items()) if n == 2)

    def plant(module, args, output):
        return output * (1 + 999 * (args[0] == token).unsqueeze(-1))

    handle = pair.teacher.model.get_input_embeddings().register_forward_hook(plant)
    try:
        config = load_config(**{"prompts.max_prompts": 24, "chance.resamples": 30, "layers.teacher": "all"})
        control = control_model(pair.analog, "random", config.chance.seed)
        yield measure(pair, teacher_part(pair.teacher, config, prompts=prompts), prompts, config, control=control), pair.teacher.tokenizer.convert_ids_to_tokens(token)
    finally:
        handle.remove()


def test_the_report_lists_the_massive_rows_with_their_tokens(measured):
    m, token = measured
    assert [r["token"] for r in m.massive["rows"]] == [token, token]
    assert m.massive["excluded"] and m.capture["n_rows_left_out"] == 2
    assert 0 in m.massive["rows"][0]["layers"] and m.massive["rows"][0]["norm_ratio"][0] > 100
    assert set(m.massive["influence"]) == set(m.teacher_layers)


def test_the_heatmaps_gated_cells_are_the_gated_values(measured):
    m, _ = measured
    for i in m.teacher_layers:
        assert m.cka_matrix[i][m.mapped[i]] == m.cka[i]
        assert m.chance_matrix[i][m.mapped[i]] == m.chance["cka"][i]


def test_every_interval_holds_its_estimate(measured):
    from pytest_analog.criterion import chance_corrected

    m, _ = measured
    checked = 0
    for metric, layers in m.intervals.items():
        for i, bounds in layers.items():
            value, chance = getattr(m, metric)[i], m.chance[metric][i]
            for key, estimate in (("value", value), ("chance", chance), ("corrected", chance_corrected(value, chance))):
                low, high = bounds[key]
                assert low <= estimate <= high, (metric, i, key)
                checked += 1
    assert checked == 3 * 3 * len(m.teacher_layers)
