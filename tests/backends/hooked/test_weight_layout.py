"""Weights stored as read: the same bits as TransformerLens's own layout, the same values, and undone cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.generation import generate
from tests.conftest import hooked_available

pytestmark = pytest.mark.skipif(not hooked_available(), reason="HookedTransformer needs TransformerLens 3.x (.venv-tl3)")

PROMPT = [1, 17, 42, 5, 63, 8]


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3", "gpt2"])
def test_bit_identical_to_the_loaded_layout(tiny_dirs, name):
    from tempo_lens import load_model
    from tempo_lens.backends import backend_for
    from tempo_lens.backends.hooked.weight_layout import restore_weight_layout, store_weights_as_read, weights_stored_as_read

    stock = load_model(str(tiny_dirs[name]), backend="hooked", device="cpu", fast=False)
    assert weights_stored_as_read(stock) == 0 and backend_for(stock).apply_speedups(False) == []
    values = {k: v.clone() for k, v in stock.state_dict().items()}
    with torch.no_grad():
        stock_logits = stock(torch.tensor([PROMPT]))
    stock_run = generate(stock, PROMPT, threshold=1e-6, max_parallel=3, max_steps=3, capture=True, keep_logits=True)
    changed = store_weights_as_read(stock)
    if name != "gpt2":  # GPT-2's plain MLP multiplies in place (batch_addmm): only attention and unembedding change
        assert weights_stored_as_read(stock) > 0
    assert changed > 0 and all(torch.equal(values[k], v) for k, v in stock.state_dict().items())
    with torch.no_grad():
        assert torch.equal(stock(torch.tensor([PROMPT])), stock_logits)
    run = generate(stock, PROMPT, threshold=1e-6, max_parallel=3, max_steps=3, capture=True, keep_logits=True)
    assert run.layout.token_ids == stock_run.layout.token_ids
    assert all(torch.equal(a, b) for a, b in zip(run.step_logits, stock_run.step_logits))
    for step in run.capture:
        assert np.array_equal(np.asarray(run.capture[step]), np.asarray(stock_run.capture[step]))
    assert restore_weight_layout(stock) == changed and weights_stored_as_read(stock) == 0
    assert all(p.is_contiguous() for p in stock.parameters())


def test_on_by_default(tiny_dirs, monkeypatch):
    from tempo_lens import load_model
    from tempo_lens.backends import backend_for

    monkeypatch.delenv("TEMPO_LENS_FAST", raising=False)
    model = load_model(str(tiny_dirs["llama"]), backend="hooked", device="cpu")
    assert backend_for(model).apply_speedups(None)[0].startswith("weights stored as read")
