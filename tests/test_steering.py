"""Steering transfer on tiny models: vectors, the layer convention, hooks, maps, and the identity pair."""

import dataclasses

import numpy as np
import pytest
import torch

from pytest_analog.config import load_config
from pytest_analog.errors import AnalogError
from pytest_analog.models import decoder_blocks, load_pair
from pytest_analog.prompts import load_prompts
from pytest_analog.steering import (
    Behaviour,
    Item,
    PairedMoments,
    behaviour_probabilities,
    difference_vector,
    evaluate,
    extract,
    fit_autoencoder,
    fit_map,
    load_behaviour,
    shipped_behaviours,
    steer,
    transfer_criteria,
)
from pytest_analog.suites.steering.analog import steering_analysis
from tests.conftest import save_model, tiny_llama

TEXTS = [t for t in load_prompts("default").texts if len(t) < 120][:24]


def _planted(tokenizer, seed: int = 0):
    """A tiny Llama whose answer "{" vs "}" is read off a known unit direction u of the residual stream.

    The two answer tokens embed as e ± k·u and unembed as ± c·u, so positives and
    negatives differ along u, and adding u to the residual stream favours "{".
    """
    model = tiny_llama(tokenizer, seed=seed)
    u = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(7)), dim=0)
    a, b = tokenizer.convert_tokens_to_ids(["{", "}"])
    with torch.no_grad():
        embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        base = (embed[a] + embed[b]) / 2
        embed[a], embed[b] = base + 2.0 * u, base - 2.0 * u
        head[a], head[b] = 3.0 * u, -3.0 * u
    return model, u


def _planted_behaviour(texts=TEXTS) -> Behaviour:
    items = tuple(Item(t + "\nAnswer:", "{", "}") for t in texts)
    return Behaviour("planted", items[:16], items[16:])


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory, bos_tokenizer):
    model, u = _planted(bos_tokenizer)
    return save_model(model, bos_tokenizer, tmp_path_factory.mktemp("planted") / "model"), u


@pytest.fixture(scope="module")
def planted_pair(planted_dir):
    return load_pair(str(planted_dir[0]), str(planted_dir[0]), device="cpu", dtype="float32")


def test_shipped_behaviours_have_enough_contrastive_pairs_and_a_held_out_split():
    names = shipped_behaviours()
    assert len(names) >= 5
    for name in names:
        b = load_behaviour(name)
        assert len(b.train) >= 100 and len(b.eval) >= 20, name
        assert not {i.prompt for i in b.train} & {i.prompt for i in b.eval}, name
        letters = [i.matching for i in b.train if i.matching in (" A", " B")]
        if letters:  # A/B sets: the letter does not give the answer away
            assert len(letters) == len(b.train) and 0.35 < letters.count(" A") / len(letters) < 0.65, name


def test_behaviour_files_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "matching": " A", "other": " A", "split": "train"}\n')
    with pytest.raises(AnalogError, match="line 1: 'matching' and 'other' are the same"):
        load_behaviour(str(bad))
    bad.write_text('{"prompt": "p", "matching": " A", "other": " B", "split": "train"}\n')
    with pytest.raises(AnalogError, match="no 'eval' items"):
        load_behaviour(str(bad))
    with pytest.raises(AnalogError, match="unknown behaviour set 'nope'; shipped sets: .*sentiment"):
        load_behaviour("nope")


def test_extracted_vector_is_the_hand_computed_mean_of_hidden_state_differences(planted_pair):
    model = planted_pair.teacher
    positives, negatives = [t + "{" for t in TEXTS[:6]], [t + " and so on }" for t in TEXTS[6:12]]
    layer = 2
    vector = extract(model, positives, negatives, layer, batch_size=4)  # batched, padded, different lengths

    def last(text):  # one text at a time, no padding: hidden_states[layer] at its last token
        ids = torch.tensor([model.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            return model.model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1].double()

    expected = torch.stack([last(p) - last(n) for p, n in zip(positives, negatives)]).mean(0)
    torch.testing.assert_close(vector, expected, rtol=1e-4, atol=1e-5)


def test_pca_vector_points_so_that_positives_project_higher():
    rng = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=rng, dtype=torch.float64), dim=0)
    negative = torch.randn(40, 16, generator=rng, dtype=torch.float64)
    scale = 1 + torch.rand(40, 1, generator=rng, dtype=torch.float64)  # differences vary along the direction
    positive = negative - 3 * scale * direction  # positives lie along -direction
    pca = difference_vector(positive, negative, "pca")
    assert float(((positive - negative) @ pca).mean()) > 0
    assert abs(float(torch.nn.functional.cosine_similarity(pca, -direction, dim=0))) > 0.999
    assert float(torch.nn.functional.cosine_similarity(pca, difference_vector(positive, negative), dim=0)) > 0.999


@pytest.mark.parametrize("layer", [0, 1, 3 - 1])
def test_steering_layer_i_adds_to_hidden_states_i_from_the_chosen_position(planted_pair, layer):
    model = planted_pair.teacher.model
    ids = torch.tensor([planted_pair.teacher.tokenizer(TEXTS[0])["input_ids"]])
    vector = torch.randn(32, dtype=torch.float64)
    with torch.no_grad():
        plain = model(input_ids=ids, output_hidden_states=True).hidden_states
        with steer(model, layer, vector, 0.5, from_position=2):
            steered = model(input_ids=ids, output_hidden_states=True).hidden_states
    delta = steered[layer][0] - plain[layer][0]
    torch.testing.assert_close(delta[:2], torch.zeros_like(delta[:2]))
    torch.testing.assert_close(delta[2:], (0.5 * vector).float().expand_as(delta[2:]), rtol=1e-4, atol=1e-5)
    if layer:
        torch.testing.assert_close(steered[layer - 1], plain[layer - 1])


def test_hook_is_removed_on_exit_and_on_errors_and_bad_layers_are_refused(planted_pair):
    model = planted_pair.teacher.model
    blocks = decoder_blocks(model)
    before = [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in blocks]  # transformers keeps its own
    with pytest.raises(RuntimeError, match="boom"), steer(model, 2, torch.ones(32), 1.0):
        assert len(blocks[1]._forward_hooks) == before[1][0] + 1
        raise RuntimeError("boom")
    assert [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in blocks] == before
    with pytest.raises(AnalogError, match=r"steering layer 3 is out of range: layers 0..2"), steer(model, 3, torch.ones(32)):
        pass
    with pytest.raises(AnalogError, match="32"), steer(model, 1, torch.ones(31)):
        pass


def test_the_hook_casts_the_vector_to_the_activation_dtype(bos_tokenizer):
    model = tiny_llama(bos_tokenizer).to(torch.bfloat16)
    ids = torch.tensor([bos_tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad(), steer(model, 1, np.ones(32), 0.1):  # a float64 numpy vector
        out = model(input_ids=ids, output_hidden_states=True)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_steered_result_is_the_same_under_padding_batching_and_the_kv_cache(planted_pair):
    model, tok = planted_pair.teacher.model, planted_pair.teacher.tokenizer
    target = tok(TEXTS[1])["input_ids"]
    longer = tok(TEXTS[2] + " " + TEXTS[3])["input_ids"]
    assert len(longer) > len(target) + 3
    vector = torch.randn(32, generator=torch.Generator().manual_seed(3))
    width, pad = len(longer), tok.pad_token_id

    def run(**kwargs):
        with torch.no_grad(), steer(model, 1, vector, 2.0, from_position=3):
            return model(**kwargs).logits

    alone = run(input_ids=torch.tensor([target]))[0]
    # right padding: the target first in a batch with a longer sequence
    ids = torch.tensor([target + [pad] * (width - len(target)), longer])
    mask = (torch.arange(width)[None] < torch.tensor([[len(target)], [width]])).long()
    right = run(input_ids=ids, attention_mask=mask)[0, : len(target)]
    # left padding with position ids counted per sequence, as generate() does
    ids = torch.tensor([[pad] * (width - len(target)) + target, longer])
    mask = torch.stack([(torch.arange(width) >= width - len(target)).long(), torch.ones(width, dtype=torch.long)])
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    left = run(input_ids=ids, attention_mask=mask, position_ids=positions)[0, width - len(target) :]
    for other in (right, left):
        torch.testing.assert_close(other, alone, rtol=1e-4, atol=1e-4)
    # with the KV cache, one token per step: every step past position 3 is still steered
    from transformers import DynamicCache

    cache, steps = DynamicCache(), []
    with torch.no_grad(), steer(model, 1, vector, 2.0, from_position=3):
        for k, token in enumerate(target):
            out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                        position_ids=torch.tensor([[k]]))
            cache = out.past_key_values
            steps.append(out.logits[0, -1])
    torch.testing.assert_close(torch.stack(steps), alone, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        unsteered = model(input_ids=torch.tensor([target])).logits[0]
    assert (alone[3:] - unsteered[3:]).abs().max() > 1e-2  # steering did change the result
    torch.testing.assert_close(alone[:3], unsteered[:3])


def test_planted_direction_is_recovered_and_steers_both_ways(planted_pair, planted_dir):
    model, u = planted_pair.teacher, planted_dir[1]
    behaviour = _planted_behaviour()
    vector = extract(model, [i.positive for i in behaviour.train], [i.negative for i in behaviour.train], 1)
    assert float(torch.nn.functional.cosine_similarity(vector.float(), u, dim=0)) > 0.9
    base = behaviour_probabilities(model, behaviour.eval).mean()
    up = behaviour_probabilities(model, behaviour.eval, layer=1, vector=u, alpha=2.0).mean()
    down = behaviour_probabilities(model, behaviour.eval, layer=1, vector=u, alpha=-2.0).mean()
    assert down + 0.1 < base < up - 0.1, (down, base, up)


def test_ridge_map_matches_least_squares_and_merges_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)) * rng.uniform(0.5, 5, size=12)
    y = x @ rng.normal(size=(12, 7)) + rng.normal(size=7) + 0.1 * rng.normal(size=(500, 7))
    whole, parts = PairedMoments(), PairedMoments()
    whole.update(torch.from_numpy(x), torch.from_numpy(y))
    halves = [PairedMoments(), PairedMoments()]
    halves[0].update(torch.from_numpy(x[:200]), torch.from_numpy(y[:200]))
    halves[1].update(torch.from_numpy(x[200:]), torch.from_numpy(y[200:]))
    parts.merge(halves[0]).merge(halves[1])
    design = np.hstack([x, np.ones((500, 1))])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    for moments in (whole, parts):
        fitted = fit_map("ridge", moments, ridge=1e-9)
        np.testing.assert_allclose(fitted.weight.numpy(), coef[:-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fitted.bias.numpy(), coef[-1], rtol=1e-5, atol=1e-6)
    assert evaluate(fit_map("ridge", whole, ridge=1e-9), x, y)["fvu"] < 0.01


def test_procrustes_recovers_a_scaled_rotation_into_a_wider_space_and_autoencoder_learns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8))
    rotation = np.linalg.qr(rng.normal(size=(10, 10)))[0][:8]  # 8 -> 10, orthonormal rows
    y = 3.0 * x @ rotation + 1.0
    moments = PairedMoments()
    moments.update(torch.from_numpy(x), torch.from_numpy(y))
    fitted = fit_map("procrustes", moments)
    np.testing.assert_allclose(fitted.weight.numpy(), 3.0 * rotation, atol=1e-8)
    assert evaluate(fitted, x, y) == pytest.approx({"fvu": 0.0, "cosine": 1.0}, abs=1e-9)
    auto = fit_autoencoder(torch.from_numpy(x), torch.from_numpy(y), steps=400)
    # a mean predictor scores 1; 9 ReLU units (sqrt(8 * 10)) cannot be exactly linear in 8 inputs
    assert evaluate(auto, x, y)["fvu"] < 0.35


def test_procrustes_scale_is_least_squares_when_the_analog_is_wider():
    rng = np.random.default_rng(2)
    n, d_s, d_t = 300, 12, 5
    # centred x with covariance exactly n I: the optimal rotation is then Q itself
    z = rng.normal(size=(n, d_s))
    x = np.linalg.qr(z - z.mean(0))[0] * np.sqrt(n)  # combinations of centred columns stay centred
    q = np.linalg.qr(rng.normal(size=(d_s, d_t)))[0]  # 12 -> 5, orthonormal columns
    y = 2.5 * x @ q + 1.0
    moments = PairedMoments()
    moments.update(torch.from_numpy(x), torch.from_numpy(y))
    fitted = fit_map("procrustes", moments)
    np.testing.assert_allclose(fitted.weight.numpy(), 2.5 * q, atol=1e-8)
    assert evaluate(fitted, x, y)["fvu"] == pytest.approx(0.0, abs=1e-9)
    # anisotropic x: the scale is the least-squares one for the fitted rotation, written out in numpy
    x = rng.normal(size=(n, d_s)) * rng.uniform(0.5, 3, size=d_s)
    y = 2.5 * x @ q + 1.0 + 0.1 * rng.normal(size=(n, d_t))
    moments = PairedMoments()
    moments.update(torch.from_numpy(x), torch.from_numpy(y))
    weight = fit_map("procrustes", moments).weight.numpy()
    scale = np.linalg.norm(weight[:, 0])  # the columns of the rotation have unit norm
    rotation = weight / scale
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert scale == pytest.approx(np.trace(rotation.T @ xc.T @ yc) / np.sum((xc @ rotation) ** 2), rel=1e-9)


def test_procrustes_is_least_squares_for_an_anisotropic_wider_analog():
    # unbalanced Procrustes: the polar factor of XᵀY misses Q (max |W - 2.5 Q| = 1.04, FVU 0.16 here)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 48)) * np.geomspace(0.1, 10, 48)
    q = np.linalg.qr(rng.normal(size=(48, 16)))[0]  # 48 -> 16, orthonormal columns
    for noise in (0.0, 1.0):
        y = 2.5 * x @ q + 1.0 + noise * rng.normal(size=(2000, 16))
        moments = PairedMoments()
        moments.update(torch.from_numpy(x), torch.from_numpy(y))
        fitted = fit_map("procrustes", moments)
        fvu = evaluate(fitted, x, y)["fvu"]
        xc, yc = x - x.mean(0), y - y.mean(0)
        u, _, vh = np.linalg.svd(xc.T @ yc, full_matrices=False)
        polar = u @ vh
        polar_fit = np.trace(polar.T @ xc.T @ yc) / np.sum((xc @ polar) ** 2) * xc @ polar
        polar_fvu = np.sum((yc - polar_fit) ** 2) / np.sum(yc**2)
        if noise == 0:
            assert np.abs(fitted.weight.numpy() - 2.5 * q).max() < 1e-6
            assert fvu < 1e-12
        else:
            assert fvu < 0.02 < 0.15 < polar_fvu


def test_identity_pair_maps_to_identity_and_transfers_fully(planted_pair):
    settings = dataclasses.replace(
        load_config().steering, alphas=[-2.0, -1.0, 0.0, 1.0, 2.0], map_prompts=40, train_items=16, eval_items=8,
        autoencoder_steps=50,
    )
    result = steering_analysis(planted_pair, [_planted_behaviour()], {1: 1}, settings, map_texts=TEXTS + TEXTS[:16])
    heldout = result["maps"][1]
    assert heldout["ridge"]["fvu"] < 1e-3 and heldout["ridge"]["cosine"] > 0.999
    assert heldout["procrustes"]["fvu"] < 1e-6
    case = result["behaviours"]["planted"][1]
    assert case["cosine_native_transferred"] > 0.999
    assert case["transfer_ratio"] == pytest.approx(1.0, abs=0.02)
    assert case["spearman"]["transferred"] == pytest.approx(1.0)
    passes = result["forward_passes"]
    # the 8 eval items: baseline + 4 doses x (native, transferred, the random vectors); 32 training texts; 40 map prompts
    assert passes["teacher_sequences"] == 8 * (1 + 4 * (2 + settings.random_vectors)) + 32 + 40


def test_transfer_criteria_read_the_ratio_where_native_reaches_half_its_maximum():
    curve = {
        "alphas": [-1.0, 0.0, 0.5, 1.0, 2.0],
        "probability": {"native": [0.3, 0.5, 0.6, 0.8, 0.9], "transferred": [0.4, 0.5, 0.55, 0.7, 0.8],
                        "random": [0.49, 0.5, 0.52, 0.5, 0.45]},
    }
    curve["effect"] = {k: [p - 0.5 for p in v] for k, v in curve["probability"].items()}
    out = transfer_criteria(curve, min_native_effect=0.05)
    assert out["half_max_alpha"] == 1.0  # native max 0.4, half 0.2 first reached at alpha 1
    assert out["transfer_ratio"] == pytest.approx(0.2 / 0.3)
    assert out["transfer_gap"] == pytest.approx(1 - 0.2 / 0.3)
    assert out["spearman"]["transferred"] == pytest.approx(1.0)
    assert out["random_control"] == pytest.approx(0.05 / 0.4)
    flat = transfer_criteria({**curve, "effect": {**curve["effect"], "native": [0.0, 0.0, 0.01, 0.02, 0.01]}}, min_native_effect=0.05)
    assert flat["transfer_ratio"] is None and "no native dose response" in flat["notes"]["transfer_ratio"]


def test_steering_suite_end_to_end_reports_criteria_plot_and_numbers(pytester, planted_dir, tmp_path, monkeypatch):
    import json

    from pytest_analog import models

    from tests.conftest import write_yaml

    behaviour = tmp_path / "planted.jsonl"
    lines = [{"prompt": t + "\nAnswer:", "matching": "{", "other": "}", "split": "train" if k < 16 else "eval"}
             for k, t in enumerate(TEXTS)]
    behaviour.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    steering = {"behaviours": [str(behaviour)], "teacher_layers": [1], "alphas": [-1.0, 0.0, 1.0, 2.0],
                "map_prompts": 20, "train_items": 16, "eval_items": 8, "autoencoder_steps": 20}
    gates = {"random_control": {"max": None}}
    config = write_yaml(tmp_path / "analog.yaml", {"steering": steering, "gates": gates})
    pytester.makepyfile(test_user=f"""
        import pytest
        import torch

        from pytest_analog.errors import AnalogError

        def test_fixtures(steering_vector, steering_map):
            native = steering_vector({str(behaviour)!r}, 1)
            analog = steering_vector({str(behaviour)!r}, 1, model="analog")
            with pytest.raises(AnalogError, match="model must be 'teacher' or 'analog', got 'student'"):
                steering_vector({str(behaviour)!r}, 1, model="student")
            ridge = steering_map(1, analog_layer=1)
            carried = analog @ ridge.weight
            assert torch.cosine_similarity(native, carried, dim=0) > 0.999
            assert steering_map(1, analog_layer=1) is ridge  # fitted once
    """)
    report = tmp_path / "report"
    model = planted_dir[0]
    args = [f"--analog-teacher={model}", f"--analog-student={model}", f"--analog-config={config}", f"--analog-report={report}",
            f"--analog-cache={tmp_path / 'cache'}", "--analog-suites=steering", "--analog-max-prompts=16", "-p", "no:cacheprovider"]
    result = pytester.runpytest(*args, "-v")
    result.stdout.fnmatch_lines(["*test_fixtures PASSED*", "*test_transfer_ratio?planted-layer1? PASSED*", "*test_map?teacher_layer=1-map_fvu? PASSED*"])
    assert result.ret == pytest.ExitCode.OK
    data = json.loads((report / "fidelity.json").read_text())
    case = data["steering"]["behaviours"]["planted"]["1"]
    assert case["analog_layer"] == 1  # the CKA best match of a model against itself
    assert case["transfer_ratio"] == pytest.approx(1.0, abs=0.02)
    randoms = {"random", *(f"random:{v}" for v in range(1, load_config().steering.random_vectors))}
    assert set(case["probability"]) == {"native", "transferred", *randoms} and len(case["alphas"]) == 4
    ratio = next(c for c in data["criteria"] if c["metric"] == "transfer_ratio")
    assert ratio["passed"] and ratio["behaviour"] == "planted" and ratio["threshold"] == 0.9
    html = (report / "fidelity.html").read_text()
    assert 'id="steering"' in html and 'alt="dose-response curves per behaviour"' in html
    assert "Steering transfer" in (report / "fidelity.md").read_text()
    assert data["steering"]["cached"] is False

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a threshold change")

    # a rerun with only a steering threshold changed reads both runs from the cache and loads no model
    monkeypatch.setattr(models, "load_model", no_model)
    monkeypatch.setattr(models, "load_pair", no_model)
    (pytester.path / "test_user.py").unlink()  # its fixtures need the models
    write_yaml(config, {"steering": steering, "gates": {**gates, "transfer_ratio": {"min": 1.5}}})
    pytester.runpytest(*args).assert_outcomes(passed=6, failed=1)
    again = json.loads((report / "fidelity.json").read_text())
    assert again["steering"]["cached"] is True and again["steering"]["behaviours"] == data["steering"]["behaviours"]
    ratio = next(c for c in again["criteria"] if c["metric"] == "transfer_ratio")
    assert not ratio["passed"] and ratio["threshold"] == 1.5 and again["verdict"] == "fail" and "error" not in again


@pytest.mark.parametrize(
    ("steering", "message"),
    [
        ({"teacher_layers": [3]}, "*steering.teacher_layers lists [[]3[]], but the teacher's steerable layers are 0..2*"),
        ({"behaviours": ["nope"]}, "*unknown behaviour set 'nope'; shipped sets: *"),
        ({"map": "linear"}, "*'steering.map' must be 'ridge' or 'procrustes' or 'autoencoder', got 'linear'*"),
    ],
)
def test_bad_steering_config_is_a_usage_error_before_models_load(pytester, tiny_dir, tmp_path, steering, message):
    from tests.conftest import write_yaml

    config = write_yaml(tmp_path / "analog.yaml", {"steering": steering})
    result = pytester.runpytest(f"--analog-teacher={tiny_dir}", f"--analog-student={tiny_dir}", f"--analog-config={config}",
                                "--analog-suites=steering", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


# -- teacher references: the teacher half as a stored part, direction fidelity, reference mode --------


def _small_settings(**changes):
    small = dict(alphas=[-2.0, 0.0, 1.0, 2.0], map_prompts=20, train_items=16, eval_items=8, autoencoder_steps=20, random_directions=50)
    return dataclasses.replace(load_config().steering, **{**small, **changes})


def test_the_steering_part_read_back_from_a_reference_gives_the_live_values(planted_dir, tiny_random_dir, tmp_path):
    """Issue 14: the teacher half written with `store.write` and read with `store.load` gives the analog half
    the same values as the part in memory, and those are the values of the live run."""
    import json

    from pytest_analog.reference import store
    from pytest_analog.suites.steering.teacher import teacher_part

    pair = load_pair(str(planted_dir[0]), str(tiny_random_dir), device="cpu", dtype="float32")
    settings, behaviours = _small_settings(), [_planted_behaviour()]
    part = teacher_part(pair.teacher, settings, behaviours=behaviours, teacher_layers=[1], map_texts=TEXTS)
    assert sorted(part.tensors) == ["map/1", "planted/1/differences", "planted/1/native"]
    assert part.tensors["map/1"].shape == (sum(part.meta["map_lengths"]), 32)
    written = store.write(store.build(pair.teacher.info, {"steering": part}, store.tokenizer_files(pair.teacher.tokenizer), {}), tmp_path / "ref")
    stored = store.load(written.path).part("steering")

    def analog_half(p, layers):
        return json.loads(json.dumps(steering_analysis(pair, behaviours, layers, settings, map_texts=TEXTS, part=p)))

    for layers in ({1: 1}, {1: 2}):  # the analog layer is the analog half's choice; the part serves each
        in_memory = analog_half(part, layers)
        assert analog_half(stored, layers) == in_memory
        assert json.loads(json.dumps(steering_analysis(pair, behaviours, layers, settings, map_texts=TEXTS))) == in_memory
    case = in_memory["behaviours"]["planted"]["1"]
    randoms = {"random", *(f"random:{v}" for v in range(1, settings.random_vectors))}
    assert set(case["probability"]) == {"native", "transferred", *randoms} and "unmeasured" not in case
    train = behaviours[0].train
    live = extract(pair.teacher, [i.positive for i in train], [i.negative for i in train], 1, batch_size=settings.batch_size)
    assert torch.equal(stored.tensors["planted/1/native"], live)  # the steering_vector fixture's, live or stored


def test_direction_fidelity_is_the_cosine_of_the_mapped_vector_against_mapped_random_directions():
    """The value, the mapped random directions and the chance level written out with numpy."""
    from math import exp, lgamma, pi, sqrt

    from pytest_analog.steering.fidelity import direction_fidelity, mapped_random_directions
    from pytest_analog.steering.maps import AffineMap

    rng = np.random.default_rng(0)
    d_s, d_t, n = 24, 40, 16
    weight, bias = rng.normal(size=(d_s, d_t)), rng.normal(size=d_t)
    mapping = AffineMap("ridge", torch.from_numpy(weight), torch.from_numpy(bias))
    positive, negative = rng.normal(size=(n, d_s)), rng.normal(size=(n, d_s))
    differences = rng.normal(size=(n, d_t)) + 3.0
    native = differences.mean(0)
    mapped = (positive.mean(0) - negative.mean(0)) @ weight
    out = direction_fidelity(mapping, torch.from_numpy(positive), torch.from_numpy(negative), torch.from_numpy(differences),
                             torch.from_numpy(native), method="mean", draws=400, seed=3, resamples=100)
    assert out["value"] == pytest.approx(mapped @ native / np.linalg.norm(mapped) / np.linalg.norm(native), abs=1e-12)
    # a random direction r of the analog vector's norm is carried as r W (the bias cancels)
    norm = np.linalg.norm(positive.mean(0) - negative.mean(0))
    carried = mapped_random_directions(mapping, torch.from_numpy(negative), norm, 400, 3).numpy()
    r = torch.randn(400, d_s, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    expected = norm * r / np.linalg.norm(r, axis=1, keepdims=True) @ weight
    np.testing.assert_allclose(carried, expected, rtol=1e-9, atol=1e-9)
    cosines = np.abs(expected @ native) / np.linalg.norm(expected, axis=1) / np.linalg.norm(native)
    assert out["chance"] == pytest.approx(cosines.mean(), abs=1e-12)
    low, high = out["interval"]
    assert low <= out["value"] <= high and out["chance_interval"][0] <= out["chance"] <= out["chance_interval"][1]
    # an identity map: the analog's vector is carried as it is, and random directions are uniform on the
    # sphere, whose mean |cos| with a fixed vector in d dimensions is Γ(d/2) / (√π Γ((d+1)/2))
    identity = AffineMap("ridge", torch.eye(d_t, dtype=torch.float64), torch.zeros(d_t, dtype=torch.float64))
    same = rng.normal(size=(n, d_t))
    own = direction_fidelity(identity, torch.from_numpy(same + differences), torch.from_numpy(same), torch.from_numpy(differences),
                             torch.from_numpy(native), method="mean", draws=4000, seed=1, resamples=0)
    uniform = exp(lgamma(d_t / 2) - lgamma((d_t + 1) / 2)) / sqrt(pi)
    assert own["value"] == pytest.approx(1.0, abs=1e-12) and own["interval"] is None
    assert own["chance"] == pytest.approx(uniform, abs=4 * sqrt((1 / d_t - uniform**2) / 4000))


def test_a_model_against_itself_has_direction_fidelity_one_and_chance_near_zero(bos_tokenizer, tmp_path):
    from math import sqrt

    model = tiny_llama(bos_tokenizer, hidden=128, layers=2)
    folder = save_model(model, bos_tokenizer, tmp_path / "wide")
    pair = load_pair(str(folder), str(folder), device="cpu", dtype="float32")
    from pytest_analog.suites.steering.teacher import teacher_part

    behaviours, texts = [load_behaviour("sentiment")], load_prompts("default", 64).texts
    settings = _small_settings(map_prompts=64, random_directions=200, alphas=[0.0, 0.1], eval_items=2)
    part = teacher_part(pair.teacher, settings, behaviours=behaviours, teacher_layers=[1], map_texts=texts)
    for kind in ("ridge", "procrustes"):
        result = steering_analysis(pair, behaviours, {1: 1}, dataclasses.replace(settings, map=kind), map_texts=texts, part=part)
        fidelity = result["behaviours"]["sentiment"][1]["direction_fidelity"]
        assert fidelity["value"] > 0.999, kind
        assert fidelity["chance"] < 2 / sqrt(128), kind  # uniform directions in 128 dimensions: 0.07


def test_reference_mode_lists_what_needs_the_teacher_and_measures_the_rest(pytester, planted_dir, tmp_path):
    """Without the teacher's model (a teacher reference) the transfer ratio, its gap and the transferred dose
    response are recorded with no value and the reason, neither passed nor failed; direction fidelity and the
    random control are measured from the part; the fixtures read the part or name what it lacks."""
    import json

    from pytest_analog.steering.transfer import NEEDS_TEACHER
    from tests.conftest import write_yaml

    behaviour = tmp_path / "planted.jsonl"
    lines = [{"prompt": t + "\nAnswer:", "matching": "{", "other": "}", "split": "train" if k < 16 else "eval"}
             for k, t in enumerate(TEXTS)]
    behaviour.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    steering = {"behaviours": [str(behaviour)], "teacher_layers": [1], "analog_layers": {1: 1}, "alphas": [-1.0, 0.0, 1.0, 2.0],
                "map_prompts": 20, "train_items": 16, "eval_items": 8, "autoencoder_steps": 20, "random_directions": 50}
    config = write_yaml(tmp_path / "analog.yaml", {"steering": steering, "gates": {"random_control": {"max": None}}})
    model, reference = planted_dir[0], tmp_path / "ref"
    from pytest_analog.reference import cli

    assert cli.main(["build", f"--teacher={model}", f"--out={reference}", f"--config={config}", "--suites=steering",
                     "--device=cpu"]) == 0
    pytester.makepyfile(test_user=f"""
        import pytest
        import torch

        from pytest_analog.errors import AnalogError

        def test_fixtures(steering_vector, steering_map, analog_session):
            native = steering_vector({str(behaviour)!r}, 1)
            assert native is analog_session.part("steering").tensors["planted/1/native"]
            carried = steering_vector({str(behaviour)!r}, 1, model="analog") @ steering_map(1, analog_layer=1).weight
            assert torch.cosine_similarity(native, carried, dim=0) > 0.999
            with pytest.raises(AnalogError, match="^the teacher reference's steering part holds no native vector of 'planted' "
                                                  "at teacher layer 2; build the reference with steering.behaviours and "
                                                  "steering.teacher_layers including it$"):
                steering_vector({str(behaviour)!r}, 2)
            with pytest.raises(AnalogError, match="holds no teacher activations at layer 2 for steering maps"):
                steering_map(2, analog_layer=1)
    """)
    result = pytester.runpytest(f"--analog-reference={reference}", f"--analog-student={model}", f"--analog-config={config}",
                                f"--analog-report={tmp_path / 'report'}", "--analog-suites=steering", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    data = json.loads((tmp_path / "report" / "fidelity.json").read_text())
    rows = {c["metric"]: c for c in data["criteria"] if c["suite"] == "steering"}
    gates = load_config(config).gates
    for metric in ("transfer_ratio", "transfer_gap", "spearman"):
        assert rows[metric]["value"] is None and rows[metric]["reason"] == NEEDS_TEACHER, metric
        assert rows[metric]["gated"] is False and rows[metric]["passed"] is None and rows[metric]["needs_teacher"], metric
    # the configured gate the leaderboard checks agrees; a value cannot hide behind needs_teacher
    assert not gates.gate("transfer_ratio", None, needs_teacher=True).gated
    assert gates.gate("transfer_ratio", 0.1, needs_teacher=True).gated
    assert rows["direction_fidelity"]["value"] > 0.999 and rows["direction_fidelity"]["chance"] < 0.5
    assert rows["random_control"]["value"] is not None and data["verdict"] == "pass"
    case = data["steering"]["behaviours"]["planted"]["1"]
    randoms = {"random", *(f"random:{v}" for v in range(1, load_config().steering.random_vectors))}
    assert set(case["probability"]) == {"native", *randoms} and case["transfer_ratio"] is None
