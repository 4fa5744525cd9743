"""Built-in distillation: student shapes, losses, data, resume, the command, and that it works."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from pytest_analog.suites.compliance import checks as compliance
from pytest_analog.config import load_config
from pytest_analog.distill import DistillConfig, distill, losses
from pytest_analog.distill import checkpoint as checkpoint_module
from pytest_analog.distill.data import read_texts, split_rows, teacher_targets, token_chunks
from pytest_analog.distill.student import TOLERANCE, count_parameters, kept_blocks, plan_shape, student_config
from pytest_analog.errors import AnalogError
from pytest_analog.models import resolve_source
from tests.conftest import save_model, tiny_llama, train_tokenizer


# -- student shapes ---------------------------------------------------------------------------


def _configs():
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen2Config

    return {
        # SmolLM2-135M's shape: tied 49152 x 576 embedding (28 M of its 135 M parameters)
        "llama-smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
        "llama-untied": LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                    num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False),
        "qwen2-0.5b": Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                  num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
        "gpt-neox-pythia-410m": GPTNeoXConfig(vocab_size=50304, hidden_size=1024, intermediate_size=4096,
                                              num_hidden_layers=24, num_attention_heads=16),
    }


@pytest.mark.parametrize("family", list(_configs()))
@pytest.mark.parametrize("fraction", [0.05, 0.2])
def test_student_shape_hits_the_fraction(family, fraction):
    teacher = _configs()[family]
    shape = plan_shape(teacher, fraction)
    assert abs(shape.fraction / fraction - 1) <= TOLERANCE
    config = student_config(teacher, shape, kept_blocks(teacher.num_hidden_layers, shape.layers, "uniform"))
    # the planned count is the built model's count, as a fraction of the built teacher's
    assert count_parameters(config) == shape.parameters
    assert shape.parameters / count_parameters(teacher) == pytest.approx(shape.fraction)
    assert shape.heads % shape.kv_heads == 0
    assert 1 <= shape.layers <= teacher.num_hidden_layers and shape.hidden < teacher.hidden_size


def test_unreachable_fraction_is_a_clear_error():
    with pytest.raises(AnalogError, match="no llama shape holds 0.10% .* choose another fraction"):
        plan_shape(_configs()["llama-smollm2-135m"], 0.001)


@pytest.mark.parametrize(("how", "expected"), [("uniform", [0, 3, 6, 9]), ("first_last", [0, 4, 7, 11])])
def test_kept_blocks(how, expected):
    assert kept_blocks(12, 4, how) == expected


# -- losses against hand computations ------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p, q):
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)))


@pytest.fixture
def logits():
    g = np.random.default_rng(0)
    return g.normal(size=(4, 6)) * 2, g.normal(size=(4, 6)) * 2  # teacher, student


def _buckets(t, s, temperature, k):
    """Teacher and student log-buckets through the library, from the teacher's top-k."""
    zt = torch.tensor(t) / temperature
    logp_all = torch.log_softmax(zt, -1)
    logp, ids = logp_all.topk(k, -1)
    rest = torch.log1p(-logp.exp().sum(-1)) if k < t.shape[1] else torch.full((t.shape[0],), float("-inf"), dtype=torch.float64)
    return losses.teacher_buckets(logp, rest), losses.student_buckets(torch.tensor(s), ids, temperature), ids


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_and_reverse_kl_full_vocabulary(logits, temperature):
    t, s = logits
    log_p, log_q, _ = _buckets(t, s, temperature, k=6)
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    assert float(losses.forward_kl(log_p, log_q, temperature)) == pytest.approx(temperature**2 * _kl(p, q), rel=1e-5)
    assert float(losses.reverse_kl(log_p, log_q, temperature)) == pytest.approx(temperature**2 * _kl(q, p), rel=1e-5)
    assert _kl(p, q) != pytest.approx(_kl(q, p), rel=1e-2)  # the two directions differ on this data


def test_top_k_buckets_hold_the_rest_of_the_mass(logits):
    t, s = logits
    log_p, log_q, ids = _buckets(t, s, 1.0, k=2)
    p, q = _softmax(t), _softmax(s)
    rows = np.arange(len(t))[:, None]
    idx = ids.numpy()
    bp = np.concatenate([p[rows, idx], 1 - p[rows, idx].sum(1, keepdims=True)], 1)
    bq = np.concatenate([q[rows, idx], 1 - q[rows, idx].sum(1, keepdims=True)], 1)
    assert float(losses.forward_kl(log_p, log_q)) == pytest.approx(_kl(bp, bq), rel=1e-5)
    assert _kl(bp, bq) <= _kl(p, q)  # grouping tokens can only lose divergence


def test_generalized_jsd_endpoints_and_midpoint(logits):
    from scipy.spatial.distance import jensenshannon

    t, s = logits
    log_p, log_q, _ = _buckets(t, s, 1.0, k=6)
    assert float(losses.generalized_jsd(log_p, log_q, 0.0)) == pytest.approx(float(losses.forward_kl(log_p, log_q)))
    assert float(losses.generalized_jsd(log_p, log_q, 1.0)) == pytest.approx(float(losses.reverse_kl(log_p, log_q)))
    p, q = _softmax(t), _softmax(s)
    expected = np.mean([jensenshannon(a, b) ** 2 for a, b in zip(p, q)])  # natural log
    assert float(losses.generalized_jsd(log_p, log_q, 0.5)) == pytest.approx(expected, rel=1e-5)
    m = 0.3 * p + 0.7 * q
    assert float(losses.generalized_jsd(log_p, log_q, 0.3)) == pytest.approx(0.3 * _kl(p, m) + 0.7 * _kl(q, m), rel=1e-5)
    assert float(losses.generalized_jsd(log_p, log_p, 0.5)) == pytest.approx(0.0, abs=1e-7)


def test_alignment_losses_by_hand():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert float(losses.alignment(a, b, "mse")) == pytest.approx(float(((a - b) ** 2).mean() / (b**2).mean()), rel=1e-6)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert float(losses.alignment(a, b, "cosine")) == pytest.approx(float((1 - cos).mean()), rel=1e-6)
    assert float(losses.alignment(3 * b, b, "cosine")) == pytest.approx(0.0, abs=1e-6)


# -- data ---------------------------------------------------------------------------------------


def test_corpus_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third"}\n')
    assert read_texts(str(tmp_path)) == ["first document", "second", "third"]
    assert len(read_texts("builtin")) >= 10
    import datasets

    datasets.Dataset.from_dict({"text": ["x y", "z"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_texts(f"dataset:{tmp_path / 'ds'}") == ["x y", "z"]
    (tmp_path / "bad.jsonl").write_text('{"body": 1}\n')
    with pytest.raises(AnalogError, match=r'bad.jsonl:1: expected a JSON object with a "text" field'):
        read_texts(str(tmp_path / "bad.jsonl"))
    with pytest.raises(AnalogError, match="corpus .*nowhere does not exist"):
        read_texts(str(tmp_path / "nowhere"))


def test_split_rows_holds_out_every_tenth():
    train, held = split_rows(30, 0.1)
    assert held.tolist() == [9, 19, 29] and len(train) == 27


def test_teacher_targets_are_cached(tmp_path, bos_tokenizer):
    teacher = tiny_llama(bos_tokenizer)
    chunks = token_chunks(bos_tokenizer, read_texts("builtin")[:2], 16)[:6]
    path = tmp_path / "t.safetensors"
    first = teacher_targets(teacher, chunks, temperature=2.0, top_k=5, layers=[1, 3], path=path)
    logp = torch.log_softmax(teacher(input_ids=chunks).logits / 2.0, -1)
    assert torch.allclose(first.logp, logp.topk(5, -1).values, atol=1e-5)
    assert torch.allclose(first.logp.exp().sum(-1) + first.rest.exp(), torch.ones(chunks.shape), atol=1e-5)
    assert set(first.hidden) == {1, 3} and first.hidden[3].dtype == torch.float16

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    teacher.forward = refuse
    again = teacher_targets(teacher, chunks, temperature=2.0, top_k=5, layers=[1, 3], path=path)
    assert torch.equal(again.ids, first.ids) and torch.equal(again.hidden[1], first.hidden[1])


# -- runs on a tiny teacher -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A tiny Llama teacher trained briefly on three essays of the corpus, so it predicts something."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(400, add_bos=False)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    root = tmp_path_factory.mktemp("distill")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(read_texts("builtin")[:3]))
    model = LlamaForCausalLM(config)
    chunks = token_chunks(tok, read_texts(corpus), 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for rows in torch.randint(0, len(chunks), (100, 8), generator=torch.Generator().manual_seed(0)):
        model(input_ids=chunks[rows], labels=chunks[rows]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return save_model(model.eval(), tok, root / "teacher"), corpus


def _tiny_config(teacher, corpus, **overrides):
    settings = dict(teacher=str(teacher), corpus=str(corpus), fraction=0.5, seq_len=32, batch_size=8, max_steps=6,
                    warmup=2, top_k=32, checkpoint_every=3)
    return DistillConfig(**{**settings, **overrides})


@pytest.mark.parametrize("generated", [False, True], ids=["file-corpus", "generated-corpus"])
def test_resume_equals_an_uninterrupted_run(tiny_teacher, tmp_path, monkeypatch, generated):
    from safetensors.torch import load_file

    teacher_dir, corpus = tiny_teacher
    data = dict(mix=str(corpus), gen_tokens=24) if generated else {}
    config = _tiny_config(teacher_dir, "generate:1200" if generated else corpus, align="mse", ce_weight=0.5,
                          eval_every=2, **data)
    distill(config, tmp_path / "whole", progress=False)

    save = checkpoint_module.save

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt  # the process dies right after the step-3 checkpoint

    monkeypatch.setattr(checkpoint_module, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        distill(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(checkpoint_module, "save", save)
    assert checkpoint_module.peek(tmp_path / "resumed" / ".distill" / "checkpoints")["step"] == 3
    distill(config, tmp_path / "resumed", progress=False)

    whole, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys()
    # bitwise: the same CPU kernels see the same weights, optimizer state, batches and RNG state
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    records = [json.loads((tmp_path / name / "training.json").read_text()) for name in ("whole", "resumed")]
    assert records[1]["steps"] == 6 and not (tmp_path / "resumed" / ".distill" / "checkpoints").exists()
    assert records[0]["curve"] == [{**p, "seconds": q["seconds"]} for p, q in zip(records[1]["curve"], records[0]["curve"])]
    if generated:  # each run wrote its own corpus (no shared cache): the same text from the same seed
        corpora = [next((tmp_path / name / ".distill" / "corpus").glob("*.jsonl")).read_text() for name in ("whole", "resumed")]
        assert corpora[0] == corpora[1] and len(corpora[0].splitlines()) >= 1200 // 24


def test_other_settings_do_not_resume_a_checkpoint(tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "save", _crash_after(checkpoint_module.save))
    with pytest.raises(KeyboardInterrupt):
        distill(_tiny_config(*tiny_teacher), tmp_path / "out", progress=False)
    with pytest.raises(AnalogError, match="holds a checkpoint of other settings"):
        distill(_tiny_config(*tiny_teacher, lr=1e-4), tmp_path / "out", progress=False)


def _crash_after(save):
    def wrapper(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    return wrapper


@torch.no_grad()
def _heldout_kl(teacher, student, chunks) -> float:
    """KL(teacher ‖ student) per token on ``chunks``, by the foundation's logit metric."""
    from pytest_analog.metrics import StreamingLogitFidelity

    metric = StreamingLogitFidelity()
    for batch in chunks.split(8):
        metric.update(teacher(input_ids=batch).logits.flatten(0, 1), student(input_ids=batch).logits.flatten(0, 1))
    return metric.compute()["kl"]


def test_distillation_lowers_heldout_kl_far_below_a_random_student(tiny_teacher, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_analog.distill.student import random_student

    teacher_dir, corpus = tiny_teacher
    config = _tiny_config(teacher_dir, corpus, max_steps=100, lr=5e-3, warmup=10)
    out = distill(config, tmp_path / "analog", progress=False)

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    analog = AutoModelForCausalLM.from_pretrained(out).eval()  # loads back with from_pretrained
    untrained = random_student(analog.config, config.seed).eval()  # the same shape, randomly initialised
    tok = AutoTokenizer.from_pretrained(out)
    chunks = token_chunks(tok, read_texts(corpus), config.seq_len)
    held = chunks[split_rows(len(chunks), config.heldout)[1]]
    kl_analog, kl_random = _heldout_kl(teacher, analog, held), _heldout_kl(teacher, untrained, held)
    assert kl_analog < 0.25 * kl_random, (kl_analog, kl_random)  # measured: 0.05 against 2.1 nats

    generated = analog.generate(**tok("The river", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > len(tok("The river")["input_ids"])
    record = json.loads((out / "training.json").read_text())
    assert record["heldout_kl_after"] < record["heldout_kl_before"]
    assert DistillConfig.from_dict(json.loads((out / "distill_config.json").read_text())) == config
    card = (out / "README.md").read_text()
    for needed in ("## Architecture", "parameters", "## Training procedure", "## Training data", "## Intended use",
                   "## Licence", "analog-distill --config"):
        assert needed in card
    # the release is in the form the compliance suite checks for
    release, rules = compliance.release_of(resolve_source(str(out))), load_config().compliance
    for check in (
        compliance.model_card(release, rules.model_card.sections),
        compliance.training_code(release, rules.training_code.files, rules.training_code.sections),
    ):
        assert check.passed, check.message
    # the tiny teacher declares no licence, so the analog's card says so rather than inventing one
    assert not compliance.license_check(release, rules.license.allowed).passed and "check it before release" in card


def test_pruned_student_starts_close_to_its_teacher(tiny_teacher, tmp_path):
    """Width pruning by importance keeps the teacher's function better than random weights do."""
    teacher_dir, corpus = tiny_teacher
    pruned = distill(_tiny_config(teacher_dir, corpus, max_steps=1, lr=1e-9, warmup=0), tmp_path / "p", progress=False)
    random = distill(_tiny_config(teacher_dir, corpus, max_steps=1, lr=1e-9, warmup=0, init="random"), tmp_path / "r", progress=False)
    before = [json.loads((d / "training.json").read_text())["heldout_kl_before"] for d in (pruned, random)]
    assert before[0] < before[1], before


# -- the command ------------------------------------------------------------------------------


def test_command_distils_and_reruns_its_config(tiny_teacher, tmp_path, capsys):
    from pytest_analog.distill.cli import main

    teacher_dir, corpus = tiny_teacher
    args = ["--teacher", str(teacher_dir), "--corpus", str(corpus), "--fraction", "0.5", "--seq-len", "32",
            "--max-steps", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "parameters (" in capsys.readouterr().out
    assert main(["--config", str(tmp_path / "a" / "distill_config.json"), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert (tmp_path / "a" / "distill_config.json").read_text() == (tmp_path / "b" / "distill_config.json").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--fraction", "2"], "distillation setting fraction=2.0 is out of range"),
    (["--init", "magic"], "init must be one of pruned, random, got 'magic'"),
    (["--corpus", "/nowhere"], "corpus /nowhere does not exist"),
])
def test_command_bad_input_is_one_line(tiny_teacher, tmp_path, capsys, extra, message):
    from pytest_analog.distill.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--teacher", str(tiny_teacher[0]), "--out", str(tmp_path / "o"), "--quiet", *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_lr_schedule_is_a_function_of_progress():
    from pytest_analog.distill.train import lr_at

    config = DistillConfig(teacher="x", lr=1.0, warmup=4)
    assert lr_at(config, 0.0, 0) == pytest.approx(0.2)
    assert lr_at(config, 0.0, 4) == pytest.approx(1.0)
    assert lr_at(config, 1.0, 100) == pytest.approx(0.1)
    assert lr_at(config, 0.5, 50) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))


# -- the fixture ------------------------------------------------------------------------------


def test_fixture_distils_once_per_teacher_and_settings(tiny_teacher, pytester):
    teacher_dir, corpus = tiny_teacher
    pytester.makeconftest(f"""
import pytest
from pytest_analog.distill import DistillConfig

@pytest.fixture(scope="session")
def distill_config():
    return DistillConfig(teacher={str(teacher_dir)!r}, corpus={str(corpus)!r}, fraction=0.5, seq_len=32, max_steps=2)
""")
    pytester.makepyfile(test_uses="""
import json
from transformers import AutoModelForCausalLM

def test_loads(distilled_analog):
    assert AutoModelForCausalLM.from_pretrained(distilled_analog).num_parameters() > 0

def test_same(distilled_analog, pytestconfig):
    stamp = (distilled_analog / "model.safetensors").stat().st_mtime_ns
    (pytestconfig.rootpath / "seen.txt").open("a").write(f"{distilled_analog} {stamp}\\n")
""")
    args = [f"--analog-teacher={teacher_dir}", f"--analog-student={teacher_dir}", "--analog-suites=none",
            f"--analog-cache={pytester.path / 'cache'}"]
    for _ in range(2):
        pytester.runpytest(*args).assert_outcomes(passed=2)
    seen = (pytester.path / "seen.txt").read_text().split("\n")[:2]
    assert seen[0] == seen[1]  # the second session found the first one's analog: same folder, same file
    assert len(list((pytester.path / "cache" / "analogs").iterdir())) == 1


def test_fixture_skips_without_a_teacher(pytester):
    pytester.makepyfile("def test_x(distilled_analog):\n    pass\n")
    pytester.runpytest().assert_outcomes(skipped=1)


def test_batches_visit_every_chunk_once_per_epoch():
    from pytest_analog.distill.train import batch_rows

    epoch = torch.cat([batch_rows(step, 12, 4, seed=0) for step in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))
    assert torch.equal(batch_rows(5, 12, 4, seed=0), batch_rows(5, 12, 4, seed=0))
    assert not torch.equal(batch_rows(3, 12, 4, seed=0), batch_rows(3, 12, 4, seed=1))


# -- never worse with more budget: the best held-out weights are released ------------------------


def test_early_stopping_releases_the_best_heldout_weights(tiny_teacher, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_analog.distill.train import heldout_divergence

    teacher_dir, corpus = tiny_teacher
    # a learning rate that helps during warmup and then overshoots: the held-out KL falls, then rises
    config = _tiny_config(teacher_dir, corpus, lr=0.05, warmup=20, max_steps=40, eval_every=2, patience=3)
    out = distill(config, tmp_path / "analog", progress=False)
    record = json.loads((out / "training.json").read_text())
    curve = [point["heldout_kl"] for point in record["curve"]]
    best = int(np.argmin(curve))
    assert record["stopped_early"] and record["steps"] < config.max_steps
    assert [p["step"] for p in record["curve"]] == list(range(0, record["steps"] + 1, 2))
    assert curve[-1] > curve[best] < curve[0]  # it improved, then got worse: both ends differ from the best
    assert len(curve) - 1 - best == config.patience  # it stopped after `patience` evaluations without a better one
    assert record["best_step"] == record["curve"][best]["step"] and record["heldout_kl_after"] == curve[best]

    # the released weights score the best value, recomputed here from the teacher itself
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    analog = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    chunks = token_chunks(tok, read_texts(corpus), config.seq_len)
    held = chunks[split_rows(len(chunks), config.heldout)[1]]
    targets = teacher_targets(teacher, held, temperature=config.temperature, top_k=config.top_k, layers=[])
    assert heldout_divergence(analog, held, targets, config, "cpu") == pytest.approx(curve[best], rel=1e-4)
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"step {record['best_step']}" in (out / "README.md").read_text()
    # every release file has the mode the umask gives (save_pretrained alone writes the weights 0600)
    mask = os.umask(0)
    os.umask(mask)
    files = [p for p in out.iterdir() if p.is_file()]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~mask) for p in files}


# -- a corpus the teacher writes itself ---------------------------------------------------------


def test_generated_corpus_is_reproducible_from_its_seed(bos_tokenizer, tmp_path):
    from pytest_analog.distill.data import generate_texts, generated_corpus, seed_texts

    teacher = tiny_llama(bos_tokenizer)
    seeds = seed_texts()

    class Count:
        total = 0

        def update(self, n):
            self.total += n

    def make(seed, progress=None):
        return generate_texts(teacher, bos_tokenizer, seeds, 150, temperature=1.0, top_p=0.9, new_tokens=12, seed=seed,
                              batch_size=4, progress=progress)

    rng = torch.get_rng_state()
    counted = Count()
    first = make(0, counted)
    assert torch.equal(torch.get_rng_state(), rng)  # sampling leaves the caller's random stream alone
    assert counted.total == 150 and len(first) >= 150 // 12
    assert make(0) == first and make(1) != first
    assert all(any(text.startswith(s) for s in seeds) for text in first)  # each text continues a seed

    calls = []
    path = tmp_path / "corpus" / "gen.jsonl"
    assert generated_corpus(path, lambda: calls.append(1) or first) == first
    assert generated_corpus(path, lambda: calls.append(1) or []) == first and calls == [1]  # the second read the cache
    assert not list(path.parent.glob(".*.tmp"))


def test_generation_seeds_are_not_the_gates_prompts():
    from pytest_analog.distill.data import seed_texts
    from pytest_analog.prompts import load_prompts

    seeds = seed_texts()
    assert len(seeds) >= 50 and len(set(seeds)) == len(seeds)
    gate = load_prompts("default").texts
    assert not any(seed[:25] in prompt or prompt[:25] in seed for seed in seeds for prompt in gate)
    assert not any(seeds[0] in text for text in read_texts("builtin"))  # the seeds are not corpus text


@pytest.mark.parametrize(("corpus", "message"), [
    ("generate:0", "corpus generate:N takes a number of tokens"),
    ("generate:many", "corpus generate:N takes a number of tokens"),
])
def test_generate_settings_are_checked(corpus, message):
    with pytest.raises(AnalogError, match=message):
        DistillConfig(teacher="x", corpus=corpus)
    with pytest.raises(AnalogError, match="use it with corpus generate:N"):
        DistillConfig(teacher="x", mix="builtin")
    with pytest.raises(AnalogError, match="gen_top_p=0.0 is out of range"):
        DistillConfig(teacher="x", corpus="generate:10", gen_top_p=0.0)


# -- interruptions: Ctrl-C, kill (SIGTERM) and SIGKILL -------------------------------------------------


def test_ctrl_c_stops_with_one_line_that_says_how_to_resume(tiny_teacher, tmp_path, monkeypatch, capsys):
    from pytest_analog.distill.cli import main

    teacher_dir, corpus = tiny_teacher
    args = ["--teacher", str(teacher_dir), "--corpus", str(corpus), "--fraction", "0.5", "--seq-len", "32",
            "--max-steps", "6", "--checkpoint-every", "3", "--quiet", "--out", str(tmp_path / "a")]
    monkeypatch.setattr(checkpoint_module, "save", _crash_after(checkpoint_module.save))  # Ctrl-C after step 3's checkpoint
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["analog-distill: interrupted; run the same command again to resume from the checkpoint at step 3"]
    monkeypatch.undo()
    assert main(args) == 0 and (tmp_path / "a" / "model.safetensors").is_file()


_KILL_SCRIPT = """
import os, signal, sys, time
import safetensors.torch
from pytest_analog.distill.cli import main

where, signum = sys.argv[1], getattr(signal, sys.argv[2])
save_file, fsync = safetensors.torch.save_file, os.fsync

def die():
    os.kill(os.getpid(), signum)
    time.sleep(30)  # the signal arrives here

def save_then_die(tensors, path, *args, **kwargs):  # the teacher's targets, written to a temporary file
    save_file(tensors, path, *args, **kwargs)
    if where == "targets" and str(path).endswith(".tmp"):
        die()

def fsync_then_die(fd):  # the release's settings file, written to a temporary file
    fsync(fd)
    if where == "release" and "distill_config.json" in os.readlink(f"/proc/self/fd/{fd}"):
        die()

safetensors.torch.save_file, os.fsync = save_then_die, fsync_then_die
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("where", ["targets", "release"])
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_a_kill_leaves_no_temporary_files_and_resumes(tiny_teacher, tmp_path, where, signame):
    import subprocess
    import sys

    from safetensors.torch import load_file

    from pytest_analog.distill.cli import main

    teacher_dir, corpus = tiny_teacher
    args = ["--teacher", str(teacher_dir), "--corpus", str(corpus), "--fraction", "0.5", "--seq-len", "32",
            "--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--quiet"]
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    killed = subprocess.run([sys.executable, str(script), where, signame, *args, "--out", str(tmp_path / "killed")],
                            capture_output=True, text=True, timeout=600)
    leftovers = lambda: sorted(p.name for p in (tmp_path / "killed").rglob("*.tmp"))  # noqa: E731
    if signame == "SIGTERM":  # a plain kill is an interruption like Ctrl-C: cleaned up, one line, how to resume
        assert killed.returncode == 130, killed.stderr[-2000:]
        assert "Traceback" not in killed.stderr
        assert killed.stderr.strip().splitlines()[-1].startswith("analog-distill: interrupted; run the same command again")
        assert leftovers() == []
    else:  # nothing runs after SIGKILL; the release folder still holds only whole files
        assert killed.returncode == -9
        assert not [p.name for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp")]
    assert main([*args, "--out", str(tmp_path / "killed")]) == 0  # the rerun resumes and sweeps what was left
    assert leftovers() == [] and not (tmp_path / "killed" / ".distill" / "release").exists()
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "killed"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
