"""The opt-in prepacked CPU linears give the same logits and the same generation, and restore the model."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.cpu_linears import linear_modules, prepacked_linears
from tempo_lens.generation import generate

PROMPT = [1, 17, 42, 5, 63, 8]


def test_same_logits_and_generation_then_restored(tiny_llama):
    tokens = torch.tensor([PROMPT])
    with torch.no_grad():
        stock = tiny_llama(tokens)
    plain = generate(tiny_llama, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, keep_logits=True)
    with prepacked_linears(tiny_llama) as active:
        if not active:
            pytest.skip("oneDNN prepacked linears are not available in this torch build")
        assert all("forward" in vars(m) for m in linear_modules(tiny_llama))
        packed_logits = tiny_llama(tokens)
        fast = generate(tiny_llama, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, keep_logits=True)
    assert (packed_logits - stock).abs().max().item() < 1e-4
    assert fast.layout.token_ids == plain.layout.token_ids and fast.layout.steps == plain.layout.steps
    assert fast.layout.probs[len(PROMPT):] == pytest.approx(plain.layout.probs[len(PROMPT):], abs=1e-5)
    assert max((a - b).abs().max().item() for a, b in zip(fast.step_logits, plain.step_logits)) < 1e-4
    assert not any("forward" in vars(m) for m in linear_modules(tiny_llama))
    with torch.no_grad():
        assert torch.equal(tiny_llama(tokens), stock)
