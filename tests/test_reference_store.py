"""The teacher reference format (`reference.store`): safetensors + one manifest, every file hashed, refused when changed."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_analog.errors import AnalogError
from pytest_analog.part import Part
from pytest_analog.reference import store


def _reference(tokenizer, scale: float = 1.0) -> store.Reference:
    part = Part({"rows": torch.arange(12, dtype=torch.float32).reshape(3, 4) * scale, "ids": torch.tensor([5, 6, 7])},
                      {"layers": [0, 2], "note": "x"}, {"settings": {"seed": 0}, "inputs": {"prompts": "abc"}})
    return store.build({"id": "teacher", "num_layers": 2, "hidden_size": 4}, {"representation": part}, store.tokenizer_files(tokenizer),
                       {"pytest_analog": "test"})


def test_a_written_reference_reads_back_the_same_parts_and_id(tmp_path, bos_tokenizer):
    built = _reference(bos_tokenizer)
    written = store.write(built, tmp_path / "ref")
    loaded = store.load(tmp_path / "ref")
    assert loaded.id == built.id == written.id
    assert loaded.id == __import__("hashlib").sha256((tmp_path / "ref" / store.MANIFEST).read_bytes()).hexdigest()
    part = loaded.part("representation", {"settings": {"seed": 0}, "inputs": {"prompts": "abc"}})
    assert torch.equal(part.tensors["rows"], built.parts["representation"].tensors["rows"])
    assert torch.equal(part.tensors["ids"], torch.tensor([5, 6, 7]))
    assert part.meta == {"layers": [0, 2], "note": "x"}
    text = "hello world again"
    assert loaded.teacher_tokenizer()(text)["input_ids"] == bos_tokenizer(text)["input_ids"]
    names = sorted(p.relative_to(tmp_path / "ref").as_posix() for p in (tmp_path / "ref").rglob("*") if p.is_file())
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".py"))]  # data only: no pickle, no code
    assert set(json.loads((tmp_path / "ref" / store.MANIFEST).read_text())["files"]) == set(names) - {store.MANIFEST}


def test_the_id_changes_with_any_value(bos_tokenizer):
    assert _reference(bos_tokenizer).id == _reference(bos_tokenizer).id
    assert _reference(bos_tokenizer).id != _reference(bos_tokenizer, scale=1.0001).id


@pytest.mark.parametrize("damage, expected", [
    (lambda ref: (ref / "representation.safetensors").write_bytes((ref / "representation.safetensors").read_bytes()[:-1] + b"\x01"),
     "its file representation.safetensors was changed"),
    (lambda ref: (ref / "representation.json").unlink(), "its file representation.json is missing"),
    (lambda ref: (ref / "tokenizer" / "tokenizer.json").write_text("{}"), "its file tokenizer/tokenizer.json was changed"),
    (lambda ref: (ref / store.MANIFEST).write_text(json.dumps({**json.loads((ref / store.MANIFEST).read_text()), "schema_version": 99})),
     "has schema version 99; this pytest-analog reads up to 1: upgrade pytest-analog"),
    (lambda ref: (ref / store.MANIFEST).write_text("[]"), "is not a teacher reference"),
    (lambda ref: (ref / store.MANIFEST).unlink(), "is not a teacher reference (no readable manifest.json)"),
])
def test_a_changed_reference_is_refused_in_one_line(tmp_path, bos_tokenizer, damage, expected):
    store.write(_reference(bos_tokenizer), tmp_path / "ref")
    damage(tmp_path / "ref")
    with pytest.raises(AnalogError) as info:
        store.load(tmp_path / "ref")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_missing_reference_says_how_to_build_one(tmp_path):
    with pytest.raises(AnalogError, match="does not exist; build one with: analog-reference build"):
        store.load(tmp_path / "nowhere")


def test_a_part_built_with_other_settings_is_refused(tmp_path, bos_tokenizer):
    store.write(_reference(bos_tokenizer), tmp_path / "ref")
    loaded = store.load(tmp_path / "ref")
    with pytest.raises(AnalogError, match=r"built with other settings than this run asks for \(settings.seed: built with "
                                          r"0, this run reads 1\)"):
        loaded.part("representation", {"settings": {"seed": 1}, "inputs": {"prompts": "abc"}})
    with pytest.raises(AnalogError, match="holds no 'steering' part"):
        loaded.part("steering")


def test_writing_replaces_a_reference_whole_and_never_a_foreign_folder(tmp_path, bos_tokenizer):
    store.write(_reference(bos_tokenizer), tmp_path / "ref")
    second = store.write(_reference(bos_tokenizer, scale=2.0), tmp_path / "ref")
    assert store.load(tmp_path / "ref").id == second.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref"]  # no staging or old folder left
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(AnalogError, match="exists and is not a teacher reference"):
        store.write(_reference(bos_tokenizer), tmp_path / "home")
    assert (tmp_path / "home" / "notes.txt").read_text() == "mine"


def test_merged_manifests_hold_every_part(bos_tokenizer):
    a = _reference(bos_tokenizer).manifest
    b = json.loads(json.dumps(a))
    b["parts"] = {"steering": {"key": {}}}
    b["files"] = {"steering.json": "0" * 64, "steering.safetensors": "1" * 64}
    merged = store.merged([a, b])
    assert set(merged["parts"]) == {"representation", "steering"}
    assert store.part_files(merged["files"], "steering") == b["files"]
    assert store.merged([a]) == a


def test_a_settings_difference_names_the_deepest_key_and_both_whole_values():
    long = "x" * 80
    built = {"settings": {"layers.teacher": "all", "layers": {"teacher": [0, 1, 2], "map": "cka"}, "note": long + "a"},
             "inputs": {"with_logits": True, "prompts": "abc"}}
    assert store.key_difference(built, built) is None
    wanted = json.loads(json.dumps(built))
    wanted["settings"]["layers"]["teacher"] = [0, 1, 3]
    assert store.key_difference(built, wanted) == "settings.layers.teacher[2]: built with 2, this run reads 3"
    wanted = {**built, "inputs": {"with_logits": False, "prompts": "abc"}}
    assert store.key_difference(built, wanted) == "inputs.with_logits: built with true, this run reads false"
    wanted = {**built, "settings": {**built["settings"], "note": long + "b"}}
    assert store.key_difference(built, wanted) == f'settings.note: built with "{long}a", this run reads "{long}b"'
    wanted = {**built, "settings": {**built["settings"], "seed": 1}}
    assert store.key_difference(built, wanted) == "settings.seed: built with nothing, this run reads 1"


def test_stored_files_are_hashed_as_they_stream_and_read_once(tmp_path, bos_tokenizer, monkeypatch):
    """Loading hashes every file in chunks (a large part is never held whole to be hashed); a part's bytes are
    read once and those very bytes are hashed, so a file swapped after the check is never used."""
    store.write(_reference(bos_tokenizer), tmp_path / "ref")
    reads = []
    real = store.os.fdopen

    def recording(fd, mode):
        f = real(fd, mode)
        read = f.read
        f.read = lambda size=-1: reads.append(size) or read(size)
        return f

    monkeypatch.setattr(store.os, "fdopen", recording)
    loaded = store.load(tmp_path / "ref")
    assert reads[0] == -1 and len(reads) > 1 and all(size > 0 for size in reads[1:])  # the manifest, then chunks
    reads.clear()
    (tmp_path / "ref" / "representation.json").write_text('{"layers": [9]}')  # swapped after the check
    with pytest.raises(AnalogError, match="its file representation.json was changed since it was opened"):
        loaded.part("representation")
    assert reads.count(-1) == 2  # each of the part's files read whole once
