"""The tiny models as nnsight LanguageModels (skipped where nnsight is not installed, e.g. the TL 3.9 venv)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _needs_nnsight():
    pytest.importorskip("nnsight", reason="the nnsight backend needs the extra tempo_lens[nnsight]")


@pytest.fixture(scope="session")
def tiny_nnsight(tiny_dirs):
    pytest.importorskip("nnsight", reason="the nnsight backend needs the extra tempo_lens[nnsight]")
    from tempo_lens import load_model

    return {name: load_model(str(path), backend="nnsight", device="cpu") for name, path in tiny_dirs.items()}

