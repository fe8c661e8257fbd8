"""The three backends make the same TEMPO generation: the nnsight backend against the bridge and HookedTransformer.

Each generates one prompt in both modes with capture on: the same tokens, logits within 1e-4 at every step,
captured attention within 1e-5. The bridge runs in ``.venv``, HookedTransformer in the TL 3.9 venv
(``.venv-tl3``); nnsight is in both. On the embedded model (a few steps), and, marked ``zoo``, on every
installed zoo model (``make models``; skipped with the install command where one is not). HookedTransformer
computes attention and MLPs with its own kernels, so on a model whose large activations magnify fp32 rounding
(qwen2.5) two exact fp32 implementations differ by more than those bounds: on the zoo the bounds grow to HF's
own fp32 rounding on the same layouts, its full forward against its cached stepping (the nnsight run).
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


LOGIT_BOUND, ATTENTION_BOUND = 1e-4, 1e-5


def assert_agree(ours: list, theirs: list, own_rounding: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Per mode: equal tokens, step logits within 1e-4, every captured step's attention within 1e-5 (or within
    ``own_rounding``, HF's own fp32 rounding in logits and attention, where larger). Returns the largest gaps."""
    logit_bound, attention_bound = max(LOGIT_BOUND, own_rounding[0]), max(ATTENTION_BOUND, own_rounding[1])
    worst = [0.0, 0.0]
    for nnsight, reference in zip(ours, theirs, strict=True):
        assert nnsight.layout.token_ids == reference.layout.token_ids
        assert len(nnsight.step_logits) == len(reference.step_logits) > 0
        gap = max((a - b).abs().max().item() for a, b in zip(nnsight.step_logits, reference.step_logits))
        assert gap < logit_bound
        worst[0] = max(worst[0], gap)
        assert nnsight.capture.step_ids == reference.capture.step_ids and reference.capture.step_ids
        for step in reference.capture.step_ids:
            a, b = np.asarray(nnsight.capture[step]), np.asarray(reference.capture[step])
            assert a.shape == b.shape and np.abs(a - b).max() < attention_bound
            worst[1] = max(worst[1], float(np.abs(a - b).max()))
    return worst[0], worst[1]


def hf_own_rounding(hf, results: list) -> tuple[float, float]:
    """HF's full fp32 forward over each result's layout (position_ids, 4D float mask) against ``results``, nnsight
    runs (HF's own cached stepping): the largest |difference| in step logits and in captured attention."""
    import torch

    from tests.helpers import oracle_mask

    logits_gap = attention_gap = 0.0
    for result in results:
        layout = result.layout
        with torch.no_grad():
            full = hf(input_ids=torch.tensor([layout.token_ids]), position_ids=torch.tensor([layout.logical_positions]),
                      attention_mask=oracle_mask(hf, layout, result.config.mode), output_attentions=True)
        for step, rows in enumerate(result.step_logits):
            r = layout.step_range(step)
            logits_gap = max(logits_gap, (full.logits[0, r.start : r.stop] - rows).abs().max().item())
        for step in result.capture.step_ids:
            r = layout.step_range(step)
            captured = np.asarray(result.capture[step])[:, 0]  # [layer, head, sibling, key]
            recomputed = torch.stack([a[0, :, r.start : r.stop, : captured.shape[-1]] for a in full.attentions]).numpy()
            attention_gap = max(attention_gap, float(np.abs(captured - recomputed[result.capture.layers]).max()))
    return logits_gap, attention_gap


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
        if backend == "nnsight":
            own = hf_own_rounding(model._module, results[backend])
        del model
        gc.collect()
    gaps = assert_agree(results["nnsight"], results[reference], own)
    print(f"\n{name} {reference} / nnsight: largest gap {gaps[0]:.1e} in logits, {gaps[1]:.1e} in attention; HF's own fp32 "
          f"rounding {own[0]:.1e}, {own[1]:.1e}")
