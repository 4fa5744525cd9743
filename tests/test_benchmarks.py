"""The benchmarks suite: local lm-eval tasks, paired deltas, errors, cache, report, the real model."""

from __future__ import annotations

import json
import math
import random
import statistics

import numpy as np
import pytest

from pytest_analog.config import load_config
from pytest_analog.criterion import Gate
from pytest_analog.errors import AnalogError
from pytest_analog.evals import compare, evaluate, paired_delta, resolve_tasks, retained_fraction
from pytest_analog.suites.benchmarks.analog import criterion
from pytest_analog.evals.tasks import SHIPPED_TASKS, shipped_task_names
from tests.conftest import write_yaml

TASK_ARGS = ["-p", "no:cacheprovider", "--analog-suites=benchmarks"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def models(teacher, student):
    return [f"--analog-teacher={teacher}", f"--analog-student={student}"]


def limit_config(path, limit, **benchmarks):
    return write_yaml(path / "analog.yaml", {"benchmarks": {"limit": limit, **benchmarks}})


# -- the shipped tasks ----------------------------------------------------------------------


def test_shipped_tasks_are_large_varied_and_valid():
    assert shipped_task_names() == ["analog_agreement", "analog_arithmetic", "analog_capitals", "analog_text_perplexity"]
    for name, n, k in (("capitals", 216, 4), ("arithmetic", 240, 4), ("agreement", 240, None)):
        rows = [json.loads(line) for line in (SHIPPED_TASKS / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == n
        assert len({json.dumps(r, sort_keys=True) for r in rows}) == n  # no duplicate items
        if k:
            assert all(len(set(r["choices"])) == k and 0 <= r["answer"] < k for r in rows)
    for row in map(json.loads, (SHIPPED_TASKS / "arithmetic.jsonl").read_text().splitlines()):
        a, op, b = row["question"].split("What is ")[1].split("?")[0].split()
        assert int(row["choices"][row["answer"]]) == (int(a) + int(b) if op == "plus" else int(a) - int(b))
    shots = [json.loads(line)["question"] for line in (SHIPPED_TASKS / "arithmetic_fewshot.jsonl").read_text().splitlines()]
    assert len(shots) == 3 and not set(shots) & {json.loads(line)["question"] for line in (SHIPPED_TASKS / "arithmetic.jsonl").open()}
    tasks = resolve_tasks(shipped_task_names())
    assert tasks.names == shipped_task_names() and not tasks.registry
    for config in tasks.configs:  # data paths made absolute, pointing at existing files
        path = config["dataset_kwargs"]["data_files"]["test"]
        assert path.startswith("/") and (SHIPPED_TASKS / path.rsplit("/", 1)[1]).is_file()


# -- paired deltas against a hand computation ----------------------------------------------------


def test_paired_delta_of_accuracy_matches_hand_computation():
    teacher = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1]
    analog = [1, 0, 0, 1, 0, 0, 1, 1, 0, 1]
    d = [a - t for a, t in zip(analog, teacher)]
    out = paired_delta("acc", teacher, analog)
    assert out["delta"] == pytest.approx(sum(d) / len(d), abs=1e-15)
    assert out["delta_se"] == pytest.approx(statistics.stdev(d) / math.sqrt(len(d)), rel=1e-12)
    assert out["teacher_se"] == pytest.approx(statistics.stdev(teacher) / math.sqrt(10), rel=1e-12)
    low, high = out["delta_ci95"]
    assert (low + high) / 2 == pytest.approx(out["delta"]) and high - low == pytest.approx(2 * 1.959964 * out["delta_se"], rel=1e-6)
    # pairing matters: the unpaired SE of the same two score lists is larger (the items are correlated)
    assert out["delta_se"] < math.hypot(out["teacher_se"], out["analog_se"])
    assert paired_delta("acc", teacher, teacher)["delta_se"] == 0


def test_paired_delta_of_bits_per_byte_matches_hand_delta_method():
    # (log-likelihood, bytes) per document; both models read the same documents
    teacher = [(-300.0, 400), (-150.0, 180), (-420.0, 610), (-90.0, 100), (-260.0, 350)]
    analog = [(-340.0, 400), (-160.0, 180), (-500.0, 610), (-95.0, 100), (-300.0, 350)]
    ln2, w = math.log(2), [b for _, b in teacher]

    def bpb(rows):
        return -sum(x for x, _ in rows) / sum(b for _, b in rows) / ln2

    out = paired_delta("bits_per_byte", teacher, analog)
    assert out["teacher"] == pytest.approx(bpb(teacher)) and out["delta"] == pytest.approx(bpb(analog) - bpb(teacher))
    # linearised per-document influence of each model's bpb, differenced by document
    mean_w = sum(w) / len(w)
    r_t, r_a = -bpb(teacher) * ln2, -bpb(analog) * ln2
    z = [(-(xa - r_a * b) + (xt - r_t * b)) / mean_w / ln2 for (xt, b), (xa, _) in zip(teacher, analog)]
    assert out["delta_se"] == pytest.approx(statistics.stdev(z) / math.sqrt(len(z)), rel=1e-12)


def test_retained_fraction_is_chance_corrected():
    assert retained_fraction(0.85, 0.55, higher_is_better=True, chance=0.25) == pytest.approx(0.5)
    assert retained_fraction(0.85, 0.25, higher_is_better=True, chance=0.25) == 0  # a guessing analog keeps nothing
    assert retained_fraction(0.2, 0.3, higher_is_better=True, chance=0.25) is None  # nothing to retain
    assert retained_fraction(1.0, 1.25, higher_is_better=False, chance=None) == pytest.approx(0.8)  # bits per byte


def _results(task, values, n_choices=4, metric="acc"):
    """An lm-eval result dict with per-sample values, as `evaluate` returns it."""
    key = f"{metric},none"
    rows = [{"doc_id": i, "filter": "none", "n_choices": n_choices, metric: v} for i, v in enumerate(values)]
    return {
        "results": {task: {"alias": task, key: float(np.mean(values)), f"{metric}_stderr,none": 0.0}},
        "configs": {task: {"output_type": "multiple_choice", "metric_list": [{"metric": metric}]}},
        "higher_is_better": {task: {metric: True}},
        "samples": {task: rows},
    }


def test_compare_gives_chance_delta_and_retained_per_task():
    rng = random.Random(0)
    teacher = [int(rng.random() < 0.9) for _ in range(200)]
    analog = [t if rng.random() < 0.7 else int(rng.random() < 0.25) for t in teacher]
    row = compare(_results("t", teacher), _results("t", analog))["t"]
    assert row["chance"] == 0.25 and row["n"] == 200 and row["metric"] == "acc"
    assert row["delta"] == pytest.approx(np.mean(analog) - np.mean(teacher))
    assert row["retained"] == pytest.approx((np.mean(analog) - 0.25) / (np.mean(teacher) - 0.25))
    assert row["delta_ci95"][0] < row["delta"] < row["delta_ci95"][1] < 0  # a real loss, beyond noise
    # the teacher at chance: no retained fraction, reported rather than gated
    guess = [int(rng.random() < 0.25) for _ in range(200)]
    at_chance = compare(_results("t", guess), _results("t", guess))["t"]
    assert at_chance["retained"] is None and "not above chance" in at_chance["note"]
    gates = load_config().gates  # min_retained 0.5
    metric, measured, details = criterion(at_chance, by_delta=False)
    assert metric == "benchmark_retained" and measured.value is None
    assert not gates.gate(metric, measured.value, task="t", **details).gated
    gates = load_config(**{"gates.benchmarks.min_retained": None, "gates.benchmarks.max_drop": 0.05}).gates
    metric, measured, details = criterion(row, by_delta=True)
    assert metric == "benchmark_delta" and measured.value == row["delta"]
    assert gates.gate(metric, measured.value, task="t", **details) == Gate("min", -0.05)


def _retained_interval(teacher_p, analog_p, n, rng):
    """One simulated task: correlated per-item answers of both models, then the retained fraction's interval."""
    skill = rng.random(n)  # item easiness shared by both models
    teacher = (skill < teacher_p).astype(int)
    analog = np.where(rng.random(n) < 0.5, skill < analog_p, rng.random(n) < analog_p).astype(int)
    row = compare(_results("t", teacher.tolist()), _results("t", analog.tolist()))["t"]
    return criterion(row, by_delta=False)[1].interval


@pytest.mark.parametrize(("teacher_p", "analog_p"), [(0.85, 0.55), (0.6, 0.7)])  # R = 0.5, R = 1.29 (analog beats teacher)
def test_retained_fraction_interval_covers_the_true_ratio_at_its_nominal_rate(teacher_p, analog_p):
    rng = np.random.default_rng(0)
    true = (analog_p - 0.25) / (teacher_p - 0.25)
    intervals = np.array([_retained_interval(teacher_p, analog_p, 300, rng) for _ in range(400)])
    coverage = np.mean((intervals[:, 0] <= true) & (true <= intervals[:, 1]))
    assert 0.92 <= coverage <= 0.975, coverage  # 0.95 nominal; the SE of 400 draws is 0.011


def test_retained_fraction_interval_is_the_delta_method_written_out():
    rng = np.random.default_rng(1)
    teacher = (rng.random(150) < 0.8).astype(float)
    analog = np.where(rng.random(150) < 0.6, teacher, rng.random(150) < 0.4)
    row = compare(_results("t", teacher.tolist()), _results("t", analog.tolist()))["t"]
    t, a, c = teacher.mean(), analog.mean(), 0.25
    r = (a - c) / (t - c)
    psi = ((analog - a) - r * (teacher - t)) / (t - c)  # linearisation of the ratio in both means
    se = psi.std(ddof=1) / np.sqrt(150)
    assert row["retained_ci95"] == pytest.approx([r - 1.959964 * se, r + 1.959964 * se], rel=1e-6)
    # bits per byte, lower is better: retained = teacher / analog; an analog 1.25x worse on every item keeps 0.8, exactly
    bits = [(-(1.0 + i % 3), 4 + i % 5) for i in range(40)]  # (log-likelihood, bytes)
    row = compare(_bits_results(bits), _bits_results([(ll * 1.25, w) for ll, w in bits]))["t"]
    assert row["retained"] == pytest.approx(0.8) and row["retained_ci95"] == pytest.approx([0.8, 0.8])


def _bits_results(pairs):
    out = _results("t", [0.0] * len(pairs), metric="bits_per_byte")
    for row, pair in zip(out["samples"]["t"], pairs):
        row["bits_per_byte"] = list(pair)
        del row["n_choices"]
    ll, size = np.asarray(pairs).T
    out["results"]["t"]["bits_per_byte,none"] = -ll.sum() / size.sum() / math.log(2)
    out["higher_is_better"]["t"]["bits_per_byte"] = False
    return out


def test_per_task_gates_in_the_config(tmp_path):
    config = load_config(write_yaml(tmp_path / "a.yaml", {"gates": {"benchmarks": {"per_task": {"analog_capitals": {"max_drop": 0.1}}}}}))
    assert config.gates.benchmarks.thresholds("analog_capitals") == (None, 0.1)
    assert config.gates.benchmarks.thresholds("analog_agreement") == (0.5, None)
    with pytest.raises(AnalogError, match="gates.benchmarks: give min_retained or max_drop, not both"):
        load_config(write_yaml(tmp_path / "b.yaml", {"gates": {"benchmarks": {"max_drop": 0.1}}}))
    with pytest.raises(AnalogError, match=r"gates\.benchmarks\.per_task\.x: unknown key\(s\) min_retaind"):
        load_config(write_yaml(tmp_path / "c.yaml", {"gates": {"benchmarks": {"per_task": {"x": {"min_retaind": 0.1}}}}}))
    with pytest.raises(AnalogError, match="'benchmarks.tasks' must be a list of strings"):
        load_config(write_yaml(tmp_path / "d.yaml", {"benchmarks": {"tasks": "analog_capitals"}}))


# -- clear errors --------------------------------------------------------------------------------


def test_a_missing_task_file_is_a_clear_error(tmp_path):
    with pytest.raises(AnalogError, match=r"task file .*missing\.yaml does not exist; give a path to an lm-eval task YAML"):
        resolve_tasks([str(tmp_path / "missing.yaml")])


def test_an_unknown_task_offline_is_a_clear_error():
    with pytest.raises(AnalogError, match=r"task 'analog_capitalz' is not a shipped task .* offline .*did you mean 'analog_capitals'"):
        resolve_tasks(["analog_capitalz"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("task: [unclosed\n", "is not a valid lm-eval task YAML"),
        ("- just\n- a list\n", "is not a valid lm-eval task YAML: Expected YAML dict"),
        ("task: mine\noutput_type: multiple_choice\n", "is not an lm-eval task: it has no 'dataset_path' key"),
        ("task: mine\ndataset_path: json\noutput_type: multiple_choice\ndataset_kwargs: {data_files: {test: gone.jsonl}}\n",
         r"task mine .*data file .*gone\.jsonl does not exist"),
    ],
    ids=["not-yaml", "not-a-mapping", "missing-key", "missing-data"],
)
def test_a_malformed_task_yaml_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(AnalogError, match=message) as info:
        resolve_tasks([str(path)])
    assert "\n" not in str(info.value)


def test_a_bad_task_on_the_command_line_is_a_usage_error(pytester, tiny_dir):
    result = pytester.runpytest(*models(tiny_dir, tiny_dir), *TASK_ARGS, "--analog-tasks=no_such_task")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: task 'no_such_task' is not a shipped task*shipped tasks: analog_agreement*"])


# -- lm-eval on a loaded model -----------------------------------------------------------------------


def test_evaluate_leaves_the_callers_generators_and_train_mode_alone(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    results = evaluate(model, tokenizer, resolve_tasks(["analog_agreement"]), name="my-analog", batch_size=8, limit=6)
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert model.training  # restored after lm-eval's model.eval()
    assert results["config"]["model"] == "my-analog"
    assert results["lm_eval_version"]
    assert [row["doc_id"] for row in results["samples"]["analog_agreement"]] == list(range(6))
    assert {row["n_choices"] for row in results["samples"]["analog_agreement"]} == {2}
    json.dumps(results)  # JSON-able as it is


def test_deltas_from_a_stored_teacher_part_equal_the_live_deltas(tiny_dir, tiny_random_dir, tmp_path):
    """Issue 14: the teacher's per-item results, written to a reference and read back, give the paired
    deltas of both models run side by side, and the analog half runs only the analog."""
    from pytest_analog import models
    from pytest_analog.suites.benchmarks.analog import analog_results
    from pytest_analog.suites.benchmarks.teacher import teacher_part
    from pytest_analog.reference import store

    config = load_config(**{"benchmarks.limit": 12})
    tasks = resolve_tasks(["analog_capitals", "analog_text_perplexity"])
    pair = models.load_pair(str(tiny_dir), str(tiny_random_dir), device="cpu", dtype="float32")
    run = dict(batch_size=16, limit=12, fewshot_seed=config.seed)
    live = compare(*(evaluate(m.model, m.tokenizer, tasks, name=m.info["id"], **run) for m in (pair.teacher, pair.analog)))

    part = teacher_part(pair.teacher, config, tasks=tasks)
    reference = store.write(store.build(pair.teacher.info, {"benchmarks": part}, store.tokenizer_files(pair.teacher.tokenizer), {}), tmp_path / "ref")
    stored = store.load(reference.path).part("benchmarks")
    assert stored.meta == json.loads(json.dumps(part.meta)) and stored.tensors == {}
    pair.teacher.model = None  # as in reference mode: the analog half must not need it
    from_store = compare(**analog_results(pair, stored, config, tasks=tasks))
    assert from_store == compare(**analog_results(pair, part, config, tasks=tasks)) == live
    assert live["analog_capitals"]["delta"] != 0 and live["analog_capitals"]["delta_se"] > 0


def test_the_vllm_backend_without_vllm_is_a_one_line_error(tiny_dir, monkeypatch):
    import importlib.util

    from pytest_analog import models
    from pytest_analog.suites.benchmarks.teacher import teacher_part

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    teacher = models.load_model(str(tiny_dir), device="cpu", dtype="float32")
    config = load_config(**{"benchmarks.backend": "vllm", "benchmarks.limit": 2})
    with pytest.raises(AnalogError, match=r"^benchmarks.backend is vllm, but vLLM is not installed: pip install vllm") as error:
        teacher_part(teacher, config, tasks=resolve_tasks(["analog_capitals"]))
    assert "\n" not in str(error.value)
    with pytest.raises(AnalogError, match="'benchmarks.backend' must be 'hf' or 'vllm', got 'vlm'"):
        load_config(**{"benchmarks.backend": "vlm"})


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_lm_eval_warnings_and_progress_bars_only_when_asked(tiny_dir, capfd, caplog, verbose):
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    capfd.readouterr()
    level = logging.getLogger("lm_eval").level
    with caplog.at_level(logging.INFO):
        evaluate(model, tokenizer, resolve_tasks(["analog_agreement"]), name="m", batch_size=8, limit=4, verbose=verbose)
    shown = capfd.readouterr().err + caplog.text
    assert ("`pretrained` model kwarg is not of type `str`" in shown) is verbose
    assert ("Running loglikelihood requests" in shown) is verbose
    assert logging.getLogger("lm_eval").level == level  # restored


def test_suite_scores_equal_lm_eval_run_on_its_own_and_are_cached(pytester, tiny_dir, monkeypatch):
    """Same numbers as `simple_evaluate` run alone on the shipped YAML; a rerun reads the cache."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tasks = ["analog_capitals", "analog_text_perplexity"]
    config = limit_config(pytester.path, 8)
    args = [*models(tiny_dir, tiny_dir), *TASK_ARGS, f"--analog-config={config}", f"--analog-tasks={','.join(tasks)}",
            f"--analog-cache={pytester.path / 'cache'}", f"--analog-report={pytester.path / 'out'}"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=2)
    report = json.loads((pytester.path / "out" / "fidelity.json").read_text())
    section = report["benchmarks"]
    assert section["cached"] is False and section["lm_eval_version"] == section["results"]["teacher"]["lm_eval_version"]
    assert section["results"]["teacher"]["config"]["model"] == str(tiny_dir)

    monkeypatch.chdir(SHIPPED_TASKS)  # lm-eval alone resolves the YAML's relative data paths here
    alone = simple_evaluate(
        HFLM(pretrained=AutoModelForCausalLM.from_pretrained(tiny_dir), tokenizer=AutoTokenizer.from_pretrained(tiny_dir),
             batch_size=16),
        tasks=tasks,
        task_manager=TaskManager(include_path=str(SHIPPED_TASKS), include_defaults=False),
        limit=8,
    )
    for task in tasks:
        ours = section["results"]["teacher"]["results"][task]
        theirs = {k: v for k, v in alone["results"][task].items()}
        assert ours == json.loads(json.dumps(theirs, default=str)), task
        metric = section["tasks"][task]["metric"]
        assert section["tasks"][task]["teacher"] == alone["results"][task][f"{metric},none"]
    assert section["tasks"]["analog_text_perplexity"]["delta"] == 0 and section["tasks"]["analog_capitals"]["chance"] == 0.25
    html = (pytester.path / "out" / "fidelity.html").read_text()
    assert "<h2>Benchmarks</h2>" in html and 'alt="teacher and analog score per lm-eval task"' in html
    assert "| `analog_capitals` | acc |" in (pytester.path / "out" / "fidelity.md").read_text()

    monkeypatch.chdir(pytester.path)

    def no_rerun(*args, **kwargs):
        raise AssertionError("lm-eval ran again for an unchanged pair")

    monkeypatch.setattr("pytest_analog.evals.evaluate", no_rerun)
    pytester.runpytest(*args).assert_outcomes(passed=2)
    again = json.loads((pytester.path / "out" / "fidelity.json").read_text())["benchmarks"]
    assert again["cached"] is True and again["tasks"] == section["tasks"]


# -- the real model ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_runs_the_local_tasks_above_chance_and_a_pruned_copy_loses_ground(pytester, smollm2_gguf, tmp_path_factory, monkeypatch):
    from lm_eval import simple_evaluate  # imported before pytester's run, which unloads what it imported
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from pytest_analog.models import load_model
    from pytest_analog.controls import layer_pruned_copy

    teacher = load_model(str(smollm2_gguf), device="cpu", dtype="float32")
    pruned = tmp_path_factory.mktemp("smollm2") / "pruned"
    layer_pruned_copy(teacher.model, keep=list(range(0, 30, 2))).save_pretrained(pruned)
    teacher.tokenizer.save_pretrained(pruned)
    config = limit_config(pytester.path, 20)
    report = pytester.path / "out"
    result = pytester.runpytest(*models(smollm2_gguf, pruned), *TASK_ARGS, f"--analog-config={config}", f"--analog-report={report}")
    data = json.loads((report / "fidelity.json").read_text())
    tasks = data["benchmarks"]["tasks"]
    assert set(tasks) == set(shipped_task_names())
    capitals = tasks["analog_capitals"]
    assert capitals["teacher"] >= 0.6 and capitals["teacher_ci95"][0] > capitals["chance"] + 0.2  # clearly above chance
    assert capitals["delta_ci95"][1] < 0  # the pruned, untrained copy has lost it, beyond noise
    text = tasks["analog_text_perplexity"]
    assert 0.5 < text["teacher"] < 2.0 and text["analog"] > text["teacher"]  # bits per byte: the copy predicts worse
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = [c["id"] for c in data["criteria"] if c["gated"] and not c["passed"]]
    assert "benchmarks::test_benchmark[analog_capitals]" in failed

    # the teacher's score is exactly what lm-eval reports for it on its own
    monkeypatch.chdir(SHIPPED_TASKS)
    alone = simple_evaluate(
        HFLM(pretrained=teacher.model, tokenizer=teacher.tokenizer, batch_size=16),
        tasks=["analog_text_perplexity"],
        task_manager=TaskManager(include_path=str(SHIPPED_TASKS), include_defaults=False),
        limit=20,
    )
    assert text["teacher"] == alone["results"]["analog_text_perplexity"]["bits_per_byte,none"]
