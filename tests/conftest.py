"""Shared fixtures: tiny random-weight models built in the test, the embedded model, and the HF oracle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from tests.helpers import TINY_ARCHITECTURES, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {name: build_tiny_model(name, root / name) for name in TINY_ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_bridges(tiny_dirs):
    from tempo_lens import load_model

    return {name: load_model(str(path), device="cpu") for name, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def tiny_hooked(tiny_dirs):
    """The tiny models as HookedTransformers (TransformerLens 3.x only: `make test` runs these in .venv-tl3)."""
    pytest.importorskip("transformer_lens", reason="TransformerLens is needed")
    if not hooked_available():
        pytest.skip("HookedTransformer needs TransformerLens 3.x; make test runs these tests in .venv-tl3")
    from tempo_lens import load_model

    return {name: load_model(str(path), backend="hooked", device="cpu") for name, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def embedded_hooked():
    if not hooked_available():
        pytest.skip("HookedTransformer needs TransformerLens 3.x; make test runs these tests in .venv-tl3")
    from tempo_lens import load_model

    return load_model(backend="hooked", device="cpu")


def hooked_available() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def tiny_llama(tiny_bridges):
    return tiny_bridges["llama"]


@pytest.fixture(scope="session")
def embedded_model():
    from tempo_lens import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def embedded_hf():
    from transformers import AutoModelForCausalLM

    from tempo_lens.model import embedded_model_dir

    return AutoModelForCausalLM.from_pretrained(embedded_model_dir(), attn_implementation="eager", dtype=torch.float32).eval()


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """Register fake zoo models (part wheels under a temporary sys.path entry, an empty cache, no transformers).

    Returns ``add(name, payload, **overrides) -> ZooModel``; the fake dequantiser writes a small folder.
    """
    import tempo_lens.convert as convert
    from tempo_lens import zoo
    from tests.helpers import fake_dequantise, fake_zoo_model

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convert, "dequantise", fake_dequantise)

    def add(name: str, payload: bytes = b"GGUF" + bytes(range(256)) * 40, **overrides):
        entry = fake_zoo_model(site, name, payload, **overrides)
        monkeypatch.setitem(zoo.ZOO, name, entry)
        return entry

    return add


def pytest_collection_modifyitems(config, items):
    """Every test that loads the embedded 30-layer model is ``slow``, whether or not it says so."""
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in ("embedded_model", "embedded_hf", "embedded_hooked")):
            item.add_marker(pytest.mark.slow)
