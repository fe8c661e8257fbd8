"""Model loading: the embedded default, HF parity, the KV-cache guard, cache repair, clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from tempo_lens import load_model
from tempo_lens.errors import ModelUnavailableError
from tempo_lens.backends.bridge.fast_paths import stock_paths
from tempo_lens.generation import forward_step, new_cache
from tempo_lens.models.loading import cache_problem, embedded_model_dir

PROMPT = [504, 2644, 2643, 335, 260, 2480, 282, 260, 7553, 30, 378, 253]


def test_embedded_model_shape(embedded_model):
    assert embedded_model.cfg.n_layers == 30
    assert embedded_model.cfg.n_heads == 9
    assert not embedded_model.training


def test_bridge_logits_equal_hf_eager(embedded_model, embedded_hf):
    """The stock bridge matches HF eager closely; the default fast paths stay within the model's 1e-3 bound."""
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        ours = embedded_model(ids)
        with stock_paths(embedded_model):
            stock = embedded_model(ids)
        theirs = embedded_hf(ids).logits
    assert (stock - theirs).abs().max().item() < 1e-4
    assert (ours - theirs).abs().max().item() < 1e-3


def test_cached_decoding_equals_full_recompute(embedded_model):
    """Guards the bridge's KV cache (transformers passes ``cache=``; TL 4.3.0 read ``past_key_values=``)."""
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        full = embedded_model(ids)[0]
        cache = new_cache(embedded_model)
        rows = [forward_step(embedded_model, [PROMPT[:4]], cache)[0]]
        for token in PROMPT[4:]:
            rows.append(forward_step(embedded_model, [[token]], cache)[0])
        assert cache.get_seq_length() == len(PROMPT)
    incremental = torch.cat(rows)
    assert (incremental - full).abs().max().item() < 1e-3


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model")


def test_missing_local_path_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="No model directory"):
        load_model("/definitely/not/here")


@pytest.mark.slow
def test_same_size_cache_damage_is_rebuilt_before_any_output(tmp_path, monkeypatch):
    """4 KiB overwritten mid-weights (size kept): `generate` rebuilds the cache first, then prints real text."""
    import os

    from tests.reliability.conftest import run_cli

    source = embedded_model_dir()
    expected = run_cli(["generate", "The cat sat on the", "--max-steps", "3"])
    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path))
    target = tmp_path / source.name
    shutil.copytree(source, target)
    assert cache_problem(target) is None
    weights = target / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        handle.write(os.urandom(4096))
    assert "model.safetensors differs from its sha256" in cache_problem(target)
    rc, out, err = run_cli(["generate", "The cat sat on the", "--max-steps", "3"])
    assert rc == 0 and "unusable" in err and "rebuilding" in err
    assert out == expected[1] and cache_problem(target, full=True) is None


def test_kv_cache_shim_is_per_instance(tiny_dirs):
    """The shim wraps one model's attention bridges; the TransformerLens classes stay as shipped."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    from tempo_lens.backends.bridge.kv_cache import ensure_kv_cache

    shipped = AttentionBridge.__dict__["_update_kv_cache"]
    plain = TransformerBridge.boot_transformers(str(tiny_dirs["llama"]), device="cpu")
    attention = [m for m in plain.modules() if isinstance(m, AttentionBridge)]
    assert attention and not any("_update_kv_cache" in m.__dict__ for m in attention)
    assert ensure_kv_cache(plain) == len(attention)
    assert ensure_kv_cache(plain) == 0  # idempotent
    assert all("_update_kv_cache" in m.__dict__ for m in attention)
    assert AttentionBridge.__dict__["_update_kv_cache"] is shipped


def test_a_mistyped_name_is_refused_offline_at_once(monkeypatch, tmp_path):
    """Outside `make` (HF_HUB_OFFLINE unset) an unknown name is one error with the zoo names, before any hub call."""
    import time

    import huggingface_hub.constants

    from tempo_lens.models import loading as model_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TEMPO_LENS_DOWNLOAD", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    import tempo_lens.backends

    monkeypatch.setattr(tempo_lens.backends, "load", lambda *a, **k: pytest.fail("the hub was asked"))
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as refused:
        load_model("smolm2-135m")
    message = str(refused.value)
    assert time.perf_counter() - started < 5
    assert "did you mean 'smollm2-135m'" in message and "qwen2.5-1.5b" in message and "TEMPO_LENS_DOWNLOAD=1" in message
    monkeypatch.setenv("TEMPO_LENS_DOWNLOAD", "1")  # allowed: the name goes to the hub (here, the stub)
    assert model_module._resolve("some-org/some-model") == "some-org/some-model"


def test_a_model_in_the_local_hf_cache_loads_from_its_snapshot(monkeypatch, tmp_path, tiny_dirs):
    import huggingface_hub.constants

    from tempo_lens.models import loading as model_module

    repo = tmp_path / "hub" / "models--some-org--tiny"
    shutil.copytree(tiny_dirs["llama"], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TEMPO_LENS_DOWNLOAD", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_module._resolve("some-org/tiny") == str(repo / "snapshots" / "abc123")
