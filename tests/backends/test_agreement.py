"""The three backends make the same TEMPO generation: the nnsight backend against the bridge and HookedTransformer.

Each generates one prompt in both modes with capture on: the same tokens, logits within 1e-4 at every step,
captured attention within 1e-5. The bridge runs in ``.venv``, HookedTransformer in the TL 3.9 venv
(``.venv-tl3``); nnsight is in both. On the embedded model (a few steps), and, marked ``zoo``, on every
installed zoo model (``make models``; skipped with the install command where one is not).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from tempo_lens.generation import generate
from tempo_lens.models.zoo import ZOO, is_installed
from tests.conftest import hooked_available

PROMPT = "The cat sat on the"
SETTINGS = dict(threshold=0.05, keep_logits=True, capture=True)
REFERENCES = ("bridge", "hooked")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_nnsight():
    pytest.importorskip("nnsight", reason="the nnsight backend needs the extra tempo_lens[nnsight]")


def _needs(reference: str) -> None:
    if reference == "hooked" and not hooked_available():
        pytest.skip("HookedTransformer needs TransformerLens 3.x; make test runs these tests in .venv-tl3")


def assert_agree(ours: list, theirs: list) -> None:
    """Per mode: equal tokens, step logits within 1e-4, every captured step's attention within 1e-5."""
    for nnsight, reference in zip(ours, theirs, strict=True):
        assert nnsight.layout.token_ids == reference.layout.token_ids
        assert len(nnsight.step_logits) == len(reference.step_logits) > 0
        assert max((a - b).abs().max().item() for a, b in zip(nnsight.step_logits, reference.step_logits)) < 1e-4
        assert nnsight.capture.step_ids == reference.capture.step_ids and reference.capture.step_ids
        for step in reference.capture.step_ids:
            a, b = np.asarray(nnsight.capture[step]), np.asarray(reference.capture[step])
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5


def _both_modes(model, max_steps: int) -> list:
    return [generate(model, PROMPT, mode=mode, max_steps=max_steps, **SETTINGS) for mode in ("isolated", "visible")]


@pytest.mark.parametrize("reference", REFERENCES)
def test_embedded_model_agrees_across_backends(reference, request, embedded_nnsight):
    _needs(reference)
    other = request.getfixturevalue("embedded_model" if reference == "bridge" else "embedded_hooked")
    assert_agree(_both_modes(embedded_nnsight, 3), _both_modes(other, 3))


@pytest.mark.zoo
@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_agrees_across_backends(name, reference):
    from tempo_lens import load_model

    if not is_installed(ZOO[name]):
        pytest.skip(f"zoo model {name} is not installed; run `make models` (or `{ZOO[name].install_command}`)")
    _needs(reference)
    results = {}
    for backend in (reference, "nnsight"):  # one model in memory at a time
        model = load_model(name, backend=backend, device="cpu", fast=False)
        results[backend] = _both_modes(model, 8)
        del model
        gc.collect()
    assert_agree(results["nnsight"], results[reference])
