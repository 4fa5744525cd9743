"""Tests of the report writers: JSON, markdown, HTML, terminal lines and plots, and the suites' sections in them."""

import ast
import base64
import copy
import importlib
import json
import math
import os
import re
import struct
import typing
from pathlib import Path

import numpy as np
import pytest

import pytest_analog.atomic
from pytest_analog import criterion
from pytest_analog.criterion import Criterion, Gate, Measured
from pytest_analog.facts import Metric
from pytest_analog.registry import BUILT_IN
from pytest_analog.report import (
    SCHEMA_VERSION,
    render_html,
    render_markdown,
    terminal_lines,
    write_reports,
)
from pytest_analog.report import files, plots, schema
from pytest_analog.report.formatting import criteria_of, fmt_value, layer_metric_summary, per_layer_groups, to_jsonable
from pytest_analog.suite import Section, Suite
from pytest_analog.suites.benchmarks.report import benchmark_bars_png
from pytest_analog.suites.representation import report as representation_report
from pytest_analog.suites.steering.report import dose_response_png


def _built_in_suite(name):
    """The built-in suite ``name`` with its report sections and metric facts, built by hand (no run, no settings)."""
    sections = importlib.import_module(f"pytest_analog.suites.{name}.report").SECTIONS if name in REPORTED else ()
    return Suite(name=name, tests="x", sections=sections,
                 metrics=importlib.import_module(f"pytest_analog.suites.{name}.facts").METRICS)


REPORTED = ("representation", "steering", "benchmarks", "compliance")  # the built-in suites with report sections
SUITES = tuple(_built_in_suite(name) for name in BUILT_IN)  # in the registry's (report) order
METRICS = {k: v for suite in SUITES for k, v in suite.metrics.items()}

# Any warning, matplotlib's included, is a bug in a renderer.
pytestmark = pytest.mark.filterwarnings("error")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MALICIOUS = "<script>alert(1)</script>"


def _model(model_id, parameters, num_layers):
    return {
        "id": model_id,
        "source": "hub",
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "parameters": parameters,
        "num_layers": num_layers,
        "hidden_size": 576,
        "sha256": "ab" * 32,
        "tokenizer": {"name": "HuggingFaceTB/SmolLM2-360M", "vocab_size": 49152, "sha256": "cd" * 32},
        "dtype": "float32",
        "device": "cpu",
    }


def _criterion(suite, metric, value, threshold=None, direction=None, teacher_layer=None, analog_layer=None,
               description="", name=None):
    """A criterion row as `Criterion.to_dict` writes it, with the metric's facts where a built-in suite has them."""
    cid = f"{suite}::{name or 'test_' + metric}" + (f"[teacher_layer={teacher_layer}]" if teacher_layer is not None else "")
    details = {} if teacher_layer is None else {"teacher_layer": teacher_layer, "analog_layer": analog_layer}
    return Criterion(cid, suite, metric, Measured(value), Gate(direction, threshold), details,
                     METRICS.get(metric), description).to_dict()


def make_report(n_teacher=31, n_student=16, seed=0):
    """A plausible report: CKA high along the depth-proportional diagonal, a few failures."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_teacher)[:, None] * (n_student - 1) / max(1, n_teacher - 1)
    s = np.arange(n_student)[None, :]
    matrix = 0.92 * np.exp(-((s - t) ** 2) / 6.0) + rng.normal(0, 0.03, (n_teacher, n_student))
    matrix = np.clip(matrix, -0.05, 1.0)
    if n_teacher > 3 and n_student > 3:
        matrix[3, 3] = np.nan  # a cell that could not be computed
    best = [int(np.nanargmax(row)) if np.isfinite(row).any() else 0 for row in matrix]
    mapped = [int(round(x)) for x in t[:, 0]]

    criteria = []
    for layer in range(n_teacher):
        value = float(matrix[layer, mapped[layer]])
        if layer == 17 % n_teacher:
            value = 0.41  # the failure the tests look for
        if math.isnan(value):
            value = 0.6
        criteria.append(_criterion("representation", "cka", value, 0.5, "min", layer, mapped[layer],
                                   "debiased linear CKA over aligned tokens", name="test_cka"))
    for layer in range(n_teacher):
        value = float("nan") if layer == 5 else float(np.clip(matrix[layer, mapped[layer]] + 0.03, 0, 1))
        criteria.append(_criterion("representation", "rbf_cka", value, teacher_layer=layer, analog_layer=mapped[layer],
                                   description="RBF CKA", name="test_rbf_cka"))
    for layer in range(n_teacher):
        value = 0.05 if layer == 20 % n_teacher else 0.3 + 0.2 * rng.random()
        criteria.append(_criterion("representation", "mutual_knn", value, 0.1, "min", layer, mapped[layer],
                                   "mutual kNN, k=10", name="test_mutual_knn"))
    criteria += [
        _criterion("behaviour", "kl", 0.31, 0.2, "max", description="forward KL"),
        _criterion("behaviour", "top1_agreement", 0.74, 0.6, "min"),
        _criterion("behaviour", "perplexity_ratio", 1.21, 1.5, "max"),
        _criterion("geometry", "embedding_geometry", 0.93),
        _criterion("geometry", "unembedding_geometry", 0.97),
        _criterion("custom", "my_sparsity", 0.123, description="fraction of dead neurons (user metric)"),
    ]
    judged = [Criterion.from_dict(c) for c in criteria]
    return {
        "schema_version": SCHEMA_VERSION,
        "created": "2026-11-23T01:23:45Z",
        "tool": {"name": "pytest-analog", "version": "0.1.0"},
        "verdict": criterion.verdict(judged),
        "models": {
            "teacher": _model("HuggingFaceTB/SmolLM2-360M", 361_821_120, n_teacher - 1),
            "analog": _model("./analogs/smol-half", 180_910_560, n_student - 1),
            "parameter_fraction": 0.5,
            "same_tokenizer": True,
        },
        "environment": {"python": "3.11.7", "platform": "Linux-6.1-x86_64", "torch": "2.13.0",
                        "transformers": "5.23.0", "numpy": np.__version__, "device_name": "cpu"},
        "config": {"teacher": "HuggingFaceTB/SmolLM2-360M", "thresholds": {"cka": 0.5, "kl": 0.2}},
        "capture": {
            "prompt_set": "default", "prompt_set_sha256": "ef" * 32, "n_prompts": 256, "n_prompts_dropped": 0,
            "alignment": "token", "n_rows": 5123,
            "positions": "every token except padding and the first position of each sequence (attention sink)",
            "seconds": 12.3, "cached": False,
        },
        "layers": {
            "convention": "layer i = hidden_states[i]: 0 is the embedding output, i is the output of block i-1",
            "teacher": list(range(n_teacher)),
            "analog": list(range(n_student)),
            "cka_matrix": matrix.tolist(),
            "matrix_rows": 2048,
            "best_match": best,
            "mapped": mapped,
        },
        "criteria": criteria,
        "summary": criterion.summary(judged),
    }


@pytest.fixture
def report():
    return make_report()


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing, for HTML checks that are not about the plots."""
    monkeypatch.setattr(representation_report, "cka_heatmap_png", lambda layers: None)
    monkeypatch.setattr(plots, "layer_curves_png", lambda criteria: None)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The standard report written once (plots cost about a second per page), for read-only checks."""
    report = make_report()
    paths = write_reports(report, tmp_path_factory.mktemp("reports") / "new" / "dir", SUITES)
    return report, paths


def _failing_ids(report):
    """The ids of the report's failing criteria, in report order."""
    return [c["id"] for c in report["criteria"] if c["gated"] and c["passed"] is False]


def _pngs(page):
    """The PNG images a page embeds."""
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _png_size(png):
    """(width, height) of a PNG."""
    return struct.unpack(">II", png[16:24])


# ---------------------------------------------------------------- files


def test_write_reports_writes_three_files(written):
    report, paths = written
    assert [p.name for p in paths] == ["fidelity.json", "fidelity.md", "fidelity.html"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert paths[1].read_text(encoding="utf-8") == render_markdown(report, SUITES)


def test_json_is_strict_and_round_trips_criteria(written):
    report, paths = written
    text = paths[0].read_text(encoding="utf-8")

    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    loaded = json.loads(text, parse_constant=reject)
    assert text.startswith('{\n  "schema_version": 3')
    assert len(loaded["criteria"]) == len(report["criteria"])
    assert loaded["criteria"] == report["criteria"]  # a row holds no NaN: an unmeasured value is null already
    assert loaded["criteria"][31 + 5]["value"] is None  # rbf_cka at teacher layer 5
    assert loaded["layers"]["cka_matrix"][3][3] is None
    assert loaded["layers"]["cka_matrix"][0][0] == report["layers"]["cka_matrix"][0][0]


def test_saved_json_renders_again(written, tmp_path):
    report, paths = written
    loaded = json.loads(paths[0].read_text(encoding="utf-8"))
    again = write_reports(loaded, tmp_path, SUITES)
    assert again[1].read_text(encoding="utf-8") == render_markdown(report, SUITES)
    assert len(_pngs(again[2].read_text(encoding="utf-8"))) == 2


# ---------------------------------------------------------------- atomicity


def test_renderer_failure_writes_nothing(report, tmp_path, monkeypatch):
    for name in ("fidelity.json", "fidelity.md", "fidelity.html"):
        (tmp_path / name).write_text(f"old {name}\n", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(_report, _suites):
        """A renderer that raises."""
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(files, "render_html", broken)
    changed = copy.deepcopy(report)
    changed["verdict"] = "pass"
    with pytest.raises(RuntimeError, match="renderer exploded"):
        write_reports(changed, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_failed_rename_leaves_no_mixed_set_and_no_temp_files(report, tmp_path, monkeypatch):
    """The old files are removed before the new ones are renamed in (no old beside new): a failed swap leaves none."""
    (tmp_path / "fidelity.json").write_text('{"old": true}\n', encoding="utf-8")

    def failing_replace(src, dst):
        """A rename that fails."""
        raise OSError("disk full")

    monkeypatch.setattr(files, "render_html", lambda _report, _suites: "<html></html>")  # skip the plots
    monkeypatch.setattr(pytest_analog.atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_reports(report, tmp_path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_value_names_its_key(report, tmp_path):
    report["config"]["callback"] = object()
    with pytest.raises(TypeError, match=r"report\['config'\]\['callback'\]: expected a JSON value"):
        write_reports(report, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_to_jsonable_converts_numpy_and_non_finite():
    data = {"a": np.float32(0.5), "b": np.arange(3), "c": (1.0, float("inf")), 2: float("-inf")}
    assert to_jsonable(data) == {"a": 0.5, "b": [0, 1, 2], "c": [1.0, None], "2": None}


# ---------------------------------------------------------------- markdown


def test_markdown_verdict_counts_and_failures_first(report):
    md = render_markdown(report)
    s = report["summary"]
    first = md.splitlines()[0]
    assert first.startswith("## ❌ Analog fidelity: FAIL")
    assert f"{s['passed']}/{s['gated']} gated criteria passed, {s['failed']} failed" in first
    failing = _failing_ids(report)
    assert len(failing) == 3
    positions = [md.index(f"`{cid}`") for cid in failing]
    first_pass = md.index("✅")
    assert all(p < first_pass for p in positions)
    assert "ℹ️" in md
    summary, full = md.split("<details><summary>All 99 criteria</summary>")
    assert "| `cka`, 31 layers | min 0.41 @ 17, max " in summary and "| ≥ 0.5 | ❌ 30/31 |" in summary
    assert "| `rbf_cka`, 31 layers |" in summary and "1 n/a | — | ℹ️ |" in summary
    assert "teacher_layer=3]`" not in summary  # passing per-layer rows are folded away
    for c in report["criteria"]:
        assert f"`{c['id']}`" in full


def test_markdown_without_per_layer_criteria_is_one_table(report):
    report["criteria"] = [c for c in report["criteria"] if "teacher_layer" not in c]
    md = render_markdown(report)
    assert "<details>" not in md
    assert md.index("`behaviour::test_kl`") < md.index("`behaviour::test_top1_agreement`")


def test_markdown_models_capture_and_layer_map(report):
    md = render_markdown(report, SUITES)
    assert "| teacher | `HuggingFaceTB/SmolLM2-360M` | 361.8M |" in md
    assert "180.9M (50.0% of teacher)" in md
    assert "`abababababab`" in md
    assert "**Compared:** 5,123 aligned positions from 256 prompts (`default`, 0 dropped), token alignment." in md
    assert "first position of each sequence (attention sink)" in md
    assert re.search(r"^teacher +0 +1 +2 ", md, re.M)
    assert re.search(r"^best +\d", md, re.M) and re.search(r"^mapped +0 ", md, re.M)
    assert re.search(r"agree on \d+/31 teacher layers", md)


def test_markdown_table_survives_pipes_and_html(report):
    report["criteria"].append(_criterion("custom", "odd", 1.0, name="test_a|b<i>"))
    md = render_markdown(report)
    row = next(line for line in md.splitlines() if "test_a" in line)
    assert row.count("|") - row.count("\\|") == 5
    assert "<i>" not in row or "`" in row  # html only inside a code span


# ---------------------------------------------------------------- html


def test_html_is_self_contained(written):
    page = written[1][2].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page


def test_html_embeds_two_png_plots(written):
    pngs = _pngs(written[1][2].read_text(encoding="utf-8"))
    assert len(pngs) == 2
    assert all(png.startswith(PNG_MAGIC) for png in pngs)


def test_html_escapes_every_string(report, no_plots):
    report["models"]["analog"]["id"] = MALICIOUS
    report["criteria"][0]["id"] = MALICIOUS
    report["config"]["note"] = '"><img src=x onerror=alert(1)>'
    report["capture"]["positions"] = MALICIOUS
    page = render_html(report, SUITES)
    assert MALICIOUS not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()


def test_html_content_for_an_auditor(written):
    report, paths = written
    page = paths[2].read_text(encoding="utf-8")
    assert '<div class="verdict">FAIL</div>' in page
    assert "Positions compared:" in page and "attention sink" in page
    assert "<details><summary>Effective configuration</summary>" in page and "thresholds:" in page
    assert "Debiased linear CKA between teacher and analog" in page  # glossary
    assert "fraction of dead neurons (user metric)" in page  # unknown metric explained by its own description
    assert "transformers" in page and "5.23.0" in page
    banner = page[: page.index('<section id="models">')]
    for cid in _failing_ids(report):
        assert f"<code>{cid}</code>" in banner  # failures are named at the top
    assert "<li><code>behaviour::test_kl</code>: 0.31, needs ≤ 0.2</li>" in banner
    assert page.index("Layer correspondence") < page.index("Per-layer metrics") < page.index("Gated criteria")
    assert page.index("Gated criteria") < page.index("Informational criteria")
    assert "debiased linear CKA over aligned tokens (Kornblith et al. 2019)" in page  # a title from the suite's facts


# ---------------------------------------------------------------- edge cases


def test_no_layers_section(report):
    del report["layers"]
    page = render_html(report, SUITES)
    assert len(_pngs(page)) == 1  # per-layer curves come from the criteria
    assert "Layer correspondence" not in page
    assert "Layer map" not in render_markdown(report, SUITES)


def test_zero_criteria(report, tmp_path):
    del report["layers"]
    report["criteria"] = []
    report["summary"] = {"gated": 0, "passed": 0, "failed": 0, "informational": 0}
    report["verdict"] = "no gated criteria"
    paths = write_reports(report, tmp_path, SUITES)
    md = paths[1].read_text(encoding="utf-8")
    assert "NO GATED CRITERIA" in md and "No criteria were recorded" in md
    assert _pngs(paths[2].read_text(encoding="utf-8")) == []
    assert terminal_lines(report) == ["analog fidelity: NO GATED CRITERIA - 0 informational, none gated"]


def test_broken_plot_becomes_a_note(report, monkeypatch):
    def broken(_layers):
        """A plot that raises."""
        raise RuntimeError("no room <here>")

    monkeypatch.setattr(representation_report, "cka_heatmap_png", broken)
    monkeypatch.setattr(plots, "layer_curves_png", lambda criteria: None)
    page = render_html(report, SUITES)
    assert "Plot unavailable: RuntimeError: no room &lt;here&gt;" in page
    assert "Gated criteria" in page


def test_banner_caps_long_failure_lists(report, no_plots):
    for c in report["criteria"]:
        if c["metric"] == "cka":
            c["threshold"] = 0.99  # every layer fails
    page = render_html(report)
    banner = page[: page.index('<section id="models">')]
    assert banner.count("<li>") == 16 and "… and 18 more, listed under Criteria" in banner  # 31 cka + 2 others


def test_a_gated_criterion_without_a_value_fails_everywhere_whatever_its_row_says():
    unknown = _criterion("s", "kl", float("nan"), 0.2, "max")
    unknown["passed"] = None  # a hand-edited row: the renderers judge it again
    report = {"criteria": [unknown]}
    assert "| `s::test_kl` | n/a | ≤ 0.2 | ❌ |" in render_markdown(report)
    assert terminal_lines(report)[0] == "analog fidelity: FAIL - 0/1 gated criteria passed, 1 failed, 0 informational"
    assert terminal_lines(report)[-1].split()[-1] == "FAIL"
    assert '<tr class="fail"><td class="status">FAIL</td>' in render_html(report)


def test_session_error_is_shown_everywhere(no_plots):
    report = {"verdict": "fail", "error": "teacher <model> failed to load", "criteria": [],
              "layers": {"teacher": [0, 1], "best_match": [0, 1], "mapped": [0, None]}}
    assert "> **Error:** teacher &lt;model&gt; failed to load" in render_markdown(report)
    assert re.search(r"^mapped +0 -$", render_markdown(report, SUITES), re.M)
    assert "<strong>Error:</strong> teacher &lt;model&gt; failed to load" in render_html(report)
    assert terminal_lines(report)[1] == "  error: teacher <model> failed to load"


def test_numpy_layers_section_renders(report):
    layers = report["layers"]
    for key in ("teacher", "analog", "cka_matrix", "best_match", "mapped"):
        layers[key] = np.asarray(layers[key])
    assert representation_report.cka_heatmap_png(layers).startswith(PNG_MAGIC)
    assert "Best match and mapped agree" in render_markdown(report, SUITES)


def test_minimal_report_renders():
    minimal = {"verdict": "pass", "criteria": [_criterion("s", "kl", 0.1, 0.2, "max")]}
    assert "PASS" in render_markdown(minimal)
    assert "PASS" in render_html(minimal)
    assert terminal_lines(minimal)[0].startswith("analog fidelity: PASS - 1/1 gated")


def test_single_layer(tmp_path):
    report = make_report(n_teacher=1, n_student=1)
    assert len(report["layers"]["cka_matrix"]) == 1
    pngs = _pngs(write_reports(report, tmp_path, SUITES)[2].read_text(encoding="utf-8"))
    assert len(pngs) == 2 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert "cka: 1 layer," in "\n".join(terminal_lines(report))


def test_unknown_metric_and_section_are_rendered_generically(report, no_plots):
    report["criteria"].append(
        {"id": "mine::test_weird", "suite": "mine", "metric": "weirdness", "value": 7.0,
         "threshold": None, "direction": None, "gated": False, "passed": None}
    )
    report["extras"] = {"curves": [{"alpha": 0.5, "effect": 0.1}]}  # a section no renderer knows
    page = render_html(report, SUITES)
    assert "weirdness" in page and "User-defined metric; no description was given." in page
    assert "Other sections" in page and "extras" in page and "alpha: 0.5" in page
    assert '<summary>layers</summary>' not in page  # a suite's section shows it
    md = render_markdown(report, SUITES)
    assert "`mine::test_weird`" in md and "Also in fidelity.json: extras." in md
    assert any("mine::test_weird" in line for line in terminal_lines(report, max_lines=200))


def test_nan_values_everywhere(report):
    report["layers"]["cka_matrix"] = [[float("nan")] * 16 for _ in range(31)]
    for c in report["criteria"]:
        if c["metric"] == "cka":
            c["value"], c["passed"] = float("nan"), False
    assert len(_pngs(render_html(report, SUITES))) == 2
    assert "cka: 31 layers, 31 without a value, 0/31 pass" in terminal_lines(report)[-3]


def test_plot_functions_return_none_without_data():
    assert representation_report.cka_heatmap_png(None) is None
    assert representation_report.cka_heatmap_png({"cka_matrix": []}) is None
    assert dose_response_png(None) is None and benchmark_bars_png({"tasks": {}}) is None
    assert plots.layer_curves_png([]) is None
    assert plots.layer_curves_png(criteria_of({"criteria": [_criterion("b", "kl", 0.1, 0.2, "max")]})) is None


def test_plots_leave_matplotlib_state_alone(report):
    import matplotlib

    backend = matplotlib.get_backend()
    first = representation_report.cka_heatmap_png(report["layers"])
    second = representation_report.cka_heatmap_png(report["layers"])
    assert first == second  # fixed dpi, no timestamp: identical bytes
    assert _png_size(first) == _png_size(second)
    assert matplotlib.get_backend() == backend
    pyplot = __import__("sys").modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


# ---------------------------------------------------------------- terminal


def test_terminal_lines_compact_with_many_criteria(report):
    assert len(report["criteria"]) == 99
    report["criteria"].append(_criterion("behaviour", "extra", 2.0, 1.0, "max"))
    lines = terminal_lines(report)
    assert len(lines) <= 40
    text = "\n".join(lines)
    failing = _failing_ids(report)
    assert len(failing) == 4
    for cid in failing:
        assert cid in text
    assert "cka: 31 layers, min 0.41 @ layer 17" in text and "30/31 pass" in text
    assert "rbf_cka: 31 layers" in text and "1 without a value, informational" in text
    assert re.search(r"representation::test_cka\[teacher_layer=17\] +0\.41 +>= 0\.5 +FAIL", text)


def test_terminal_lines_cap_many_single_criteria():
    criteria = [_criterion("s", f"m{i}", 0.5, 0.4, "min") for i in range(100)]
    criteria[42]["value"], criteria[42]["passed"] = 0.1, False
    lines = terminal_lines({"criteria": criteria})
    assert len(lines) == 40
    assert "s::test_m42" in "\n".join(lines)
    assert lines[-1] == "  ... 63 more passing or informational criteria in fidelity.md"


# ---------------------------------------------------------------- formatting and schema


@pytest.mark.parametrize(
    ("value", "other", "expected"),
    [(0.83, None, "0.83"), (0.49996, 0.5, "0.49996"), (0.5, 0.5, "0.5"), (134515008, None, "134,515,008"),
     (float("nan"), None, "n/a"), (None, None, "n/a"), (1.5e-6, None, "1.500e-06")],
    ids=["plain", "near-threshold", "equal", "int", "nan", "none", "tiny"],
)
def test_fmt_value(value, other, expected):
    assert fmt_value(value, distinct_from=other) == expected


def _keys(typed_dict):
    return set(typing.get_type_hints(typed_dict))


def test_schema_documents_the_report_keys(report):
    assert schema.SCHEMA_VERSION == SCHEMA_VERSION == 3
    assert set(report) <= _keys(schema.ReportDocument)
    assert set(report["models"]) <= _keys(schema.ModelsSection)
    assert set(report["models"]["teacher"]) <= _keys(schema.ModelInfo)
    assert set(report["capture"]) <= _keys(schema.CaptureInfo)
    assert set(report["layers"]) <= _keys(schema.LayersSection)
    assert set(report["environment"]) <= _keys(schema.EnvironmentInfo)
    for c in report["criteria"]:
        assert set(c) <= _keys(schema.CriterionRow)


def test_the_schema_describes_the_row_criterion_writes_and_the_summary_it_counts():
    required = schema.CriterionRow.__required_keys__
    assert required == criterion.ROW_FIELDS  # one row schema: the documented keys are those `to_dict` writes
    assert schema.CriterionRow.__optional_keys__.isdisjoint(criterion.ROW_FIELDS)  # the rest are details
    assert set(criterion.summary([])) == _keys(schema.Summary)
    assert set(typing.get_args(schema.Verdict)) == {"pass", "fail", "partial", "no gated criteria"}


def test_no_temp_files_after_success(written):
    assert sorted(os.listdir(written[1][0].parent)) == ["fidelity.html", "fidelity.json", "fidelity.md"]


def test_each_failing_metric_says_what_it_means_and_what_helps_once(report, no_plots):
    report["criteria"].append(_criterion("custom", "my_probe", 0.1, 0.5, "min"))  # a user metric: no advice to give
    failing = {c["metric"] for c in report["criteria"] if c["gated"] and c["passed"] is False}
    assert failing == {"cka", "mutual_knn", "kl", "my_probe"}
    markdown = render_markdown(report, SUITES).split("**What to do next**")[1]
    page = render_html(report, SUITES)
    section = page[page.index('<section id="next">'):]
    section = section[: section.index("</section>")]
    for metric in failing - {"my_probe"}:
        facts = METRICS[metric]
        for text in (facts.failure, facts.remedy):
            assert markdown.count(text) == 1
            assert section.count(html_escape(text)) == 1
    assert "my_probe" not in section and "`my_probe`" not in markdown.split("\n\n**")[0]
    assert "representation::test_cka[teacher_layer=17]" in section
    assert "What to do next" not in render_markdown(report)  # without the suites, no facts say what helps


def test_a_passing_report_has_no_next_steps(no_plots):
    report = make_report()
    report["criteria"] = [c for c in report["criteria"] if c["passed"] is not False]
    assert "What to do next" not in render_markdown(report, SUITES) and "What to do next" not in render_html(report, SUITES)


def html_escape(text):
    """``text`` escaped as the HTML report escapes it."""
    import html

    return html.escape(text, quote=True)


def _steering_section(behaviours=1):
    """A steering section with ``behaviours`` behaviours at one teacher layer each."""
    case = {"analog_layer": 2, "alphas": [-0.2, -0.1, 0.0, 0.1, 0.2], "half_max_alpha": 0.1, "transfer_ratio": 0.28,
            "probability": {"native": [0.3, 0.4, 0.5, 0.6, 0.7], "transferred": [0.45, 0.5, 0.5, 0.52, 0.55],
                            "random": [0.5] * 5}}
    names = ["sentiment", "formality", "refusal", "sycophancy", "french"][:behaviours]
    return {"map": "ridge", "behaviours": {name: {"10": case} for name in names}}


@pytest.mark.parametrize(
    ("draw", "section"),
    [
        *[(dose_response_png, _steering_section(n)) for n in (1, 2, 3, 5)],
        *[(benchmark_bars_png, {"tasks": {f"task_{i}": {"metric": "acc", "teacher": 0.6, "analog": 0.4, "chance": 0.25}
                                                for i in range(n)}}) for n in (1, 4)],
    ],
    ids=["dose-1", "dose-2", "dose-3", "dose-5", "bars-1", "bars-4"],
)
def test_plot_legends_lie_inside_the_image(monkeypatch, draw, section):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    boxes = []
    to_png = plots.to_png

    def measure(fig):
        """Note each legend's box in the drawn figure, then render it."""
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        boxes.extend((fig.bbox, legend.get_window_extent(canvas.get_renderer())) for legend in fig.legends)
        return to_png(fig)

    monkeypatch.setattr(plots, "to_png", measure)
    assert draw(section) is not None
    assert boxes
    for figure, legend in boxes:
        assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and figure.y0 <= legend.y0 and legend.y1 <= figure.y1, (figure, legend)


def test_criteria_too_close_to_call_or_on_few_prompts_are_flagged_everywhere(report, no_plots):
    close = Criterion("representation::test_cka[teacher_layer=3]", "representation", "cka", Measured(0.62, (0.45, 0.7)),
                      Gate("min", 0.5, rule="lower_bound"),
                      {"teacher_layer": 3, "analog_layer": 1, "few_prompts": "only 12 prompts"}).to_dict()
    clear = Criterion("behaviour::test_top1", "behaviour", "top1_agreement", Measured(0.8, (0.7, 0.9)), Gate("min", 0.6)).to_dict()
    assert close["too_close_to_call"] and not close["passed"] and not clear["too_close_to_call"]
    report["criteria"] = [close, clear, *report["criteria"]]
    markdown, page = render_markdown(report), render_html(report)
    assert "⚠️ too close to call" in markdown and "⚠️ few prompts" in markdown
    assert "its interval holds the threshold" in markdown and "≥ 0.5, lower end" in markdown
    assert "few prompts: fewer prompts than gates.cka.min_prompts" in markdown  # the key a user can set
    assert '<span class="flag"' in page and "⚠ too close to call" in page and "⚠ few prompts" in page
    lines = "\n".join(terminal_lines(report))
    assert "FAIL (too close to call) (few prompts)" in lines and ">= 0.5, lower end" in lines
    assert "1 too close to call" in lines  # the per-layer summaries count it
    assert "⚠️ 1 too close to call" in markdown


# ---------------------------------------------------------------- counts and suites' sections


def test_a_per_layer_summary_counts_as_the_report_summary_does(no_plots):
    """A gated layer without a value failed; an ungated one without a value (it needs the teacher) is not measured,
    not failed: the per-layer line, the counts and the verdict agree on both."""
    rows = [
        _criterion("representation", "cka", 0.8, 0.5, "min", 0, 0),
        _criterion("representation", "cka", float("nan"), 0.5, "min", 1, 1),
        Criterion("representation::test_cka[teacher_layer=2]", "representation", "cka", Measured(None, reason="needs the teacher"),
                  Gate(), {"teacher_layer": 2, "analog_layer": 2}).to_dict(),
    ]
    rows[1]["passed"] = None  # as a hand-edited report may say: the renderers judge it again
    report = {"criteria": rows}
    criteria = criteria_of(report)
    counts = criterion.summary(criteria)
    assert {k: counts[k] for k in ("gated", "passed", "failed", "informational")} == \
        {"gated": 2, "passed": 1, "failed": 1, "informational": 1}
    assert counts["not_measured"] == [{"id": "representation::test_cka[teacher_layer=2]", "reason": "needs the teacher"}]
    line = layer_metric_summary(per_layer_groups(criteria)["cka"])
    assert (line["gated"], line["passed"], line["failed"], line["missing"]) == (2, 1, 1, 2)
    md = render_markdown(report)
    assert md.startswith("## ❌ Analog fidelity: FAIL (1/2 gated criteria passed, 1 failed, 1 informational)")
    assert "| `cka`, 3 layers | min 0.8 @ 0, max 0.8 @ 0, 2 n/a | ≥ 0.5 | ❌ 1/2 |" in md
    assert "not measured (neither passed nor failed): representation::test_cka[teacher_layer=2] - needs the teacher" in md
    assert terminal_lines(report)[-1] == "  cka: 3 layers, min 0.8 @ layer 0, max 0.8 @ layer 0, 2 without a value, 1/2 pass"


def _probe_markdown(report):
    """A third-party section before the criteria."""
    return f"**Probe:** {report['probe']['accuracy']}" if report.get("probe") else None


def _probe_html(report):
    """The same section in HTML."""
    return f'<section id="probe"><h2>Probe</h2><p>{report["probe"]["accuracy"]}</p></section>' if report.get("probe") else None


PROBE = Suite(
    name="probe", tests="x",
    sections=(Section(("probe",), markdown=_probe_markdown, html=_probe_html),
              Section(("probe_notes",), markdown=lambda r: "**Probe notes**", html=lambda r: "<p>Probe notes</p>", after_criteria=True),
              Section(("probe_hidden",), markdown=lambda r: None)),
    metrics={"probe_accuracy": Metric("linear probe accuracy", "A linear probe's accuracy on the analog's states.",
                                      "the probe cannot read the concept", "train on more concept data")},
)


def test_a_third_party_suite_adds_its_sections_and_facts_to_markdown_and_html(no_plots):
    rows = [_criterion("probe", "probe_accuracy", 0.4, 0.6, "min"), _criterion("logits", "kl", 0.1, 0.2, "max")]
    report = {"verdict": "fail", "criteria": rows, "probe": {"accuracy": 0.4}, "probe_notes": {}, "probe_hidden": 1, "other": 2}
    md = render_markdown(report, (*SUITES, PROBE))
    assert md.index("## ") < md.index("**Probe:** 0.4") < md.index("| criterion |")
    assert md.index("| criterion |") < md.index("**What to do next**") < md.index("**Probe notes**")
    assert "the probe cannot read the concept. Usually helps: train on more concept data." in md
    assert md.rstrip().endswith("Also in fidelity.json: other._")  # the suite's keys are known, even one it leaves out
    page = render_html(report, (*SUITES, PROBE))
    assert page.index('<section id="probe">') < page.index("Gated criteria") < page.index("<p>Probe notes</p>")
    assert "<dd>A linear probe&#x27;s accuracy on the analog&#x27;s states.</dd>" in page  # the glossary reads its facts
    assert 'title="linear probe accuracy"' in page
    assert "<summary>other</summary>" in page and "<summary>probe" not in page
    without = render_markdown(report)
    assert "**Probe:**" not in without and "Also in fidelity.json: probe, probe_notes, probe_hidden, other." in without


def test_without_its_suite_a_section_is_shown_as_an_unknown_one(report, no_plots):
    md = render_markdown(report)
    assert "**Compared:**" not in md and "Layer map" not in md
    assert "Also in fidelity.json: capture, layers." in md
    page = render_html(report)
    assert "Layer correspondence" not in page and "<summary>layers</summary>" in page


def test_the_built_in_sections_keep_their_places(report, no_plots, monkeypatch):
    monkeypatch.setattr(plots, "layer_curves_png", lambda criteria: PNG_MAGIC)
    report["criteria"].append(_criterion("compliance", "license", 0.0, 1.0, "min", name="test_license"))
    report["massive"] = {"rule": "norm > 20 x median", "rows": []}
    report["steering"] = _steering_section()
    report["benchmarks"] = {"lm_eval_version": "0.4", "tasks": {"arith": {"metric": "acc", "teacher": 0.6, "analog": 0.4}}}
    md = render_markdown(report, SUITES)
    order = ["**Compared:**", "| criterion |", "**What to do next**", "**Layer map**", "Massive activations",
             "**Steering transfer**", "**Benchmarks**", "**Release compliance**", "Full details in fidelity.html"]
    assert [md.index(part) for part in order] == sorted(md.index(part) for part in order)
    page = render_html(report, SUITES)
    order = ['id="next"', 'id="models"', 'id="capture"', 'id="layers"', 'id="massive"', 'id="steering"', 'id="per-layer"',
             'id="criteria"', 'id="benchmarks"', 'id="compliance"', 'id="environment"', "<footer>"]
    assert [page.index(part) for part in order] == sorted(page.index(part) for part in order)


def test_the_report_package_names_no_suite_and_no_registry():
    """A suite plugs its sections in; the renderers know none of them by name."""
    folder = Path(plots.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(("pytest_analog.suites", "pytest_analog.registry")), (path.name, name)
