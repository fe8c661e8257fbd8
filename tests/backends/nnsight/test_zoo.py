"""Every installed zoo model: the nnsight backend and the bridge make the same generation (``make models`` installs them)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from tempo_lens.models.zoo import ZOO, is_installed

pytestmark = pytest.mark.zoo


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_agrees_with_the_bridge(name):
    from tempo_lens import load_model
    from tempo_lens.generation import generate

    if not is_installed(ZOO[name]):
        pytest.skip(f"zoo model {name} is not installed; run `make models` (or `{ZOO[name].install_command}`)")
    settings = dict(threshold=0.05, max_steps=8, keep_logits=True, capture=True)
    results = {}
    for backend in ("bridge", "nnsight"):  # one model in memory at a time
        model = load_model(name, backend=backend, device="cpu", fast=False)
        results[backend] = [generate(model, "The cat sat on the", mode=mode, **settings) for mode in ("isolated", "visible")]
        del model
        gc.collect()
    for bridge, nnsight in zip(results["bridge"], results["nnsight"]):
        assert nnsight.layout.token_ids == bridge.layout.token_ids
        assert max((a - b).abs().max().item() for a, b in zip(nnsight.step_logits, bridge.step_logits)) < 1e-4
        for step in bridge.capture.step_ids:
            assert np.abs(np.asarray(nnsight.capture[step]) - np.asarray(bridge.capture[step])).max() < 1e-5
