"""Prepacked CPU linears: the same logits and generation as the stock weights, and a safe permanent forward."""

from __future__ import annotations

import copy

import pytest
import torch

from tempo_lens import load_model
from tempo_lens.backends.bridge.cpu_linears import (
    PackedLinearForward, install_prepacked_linears, installed_linears, linear_modules, prepacked_linears,
    remove_prepacked_linears,
)
from tempo_lens.generation import generate

PROMPT = [1, 17, 42, 5, 63, 8]
TOKENS = torch.tensor([PROMPT])


@pytest.fixture
def stock_llama(tiny_dirs):
    return load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)


def test_same_logits_and_generation_then_restored(stock_llama):
    with torch.no_grad():
        stock = stock_llama(TOKENS)
    plain = generate(stock_llama, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, keep_logits=True)
    with prepacked_linears(stock_llama) as active:
        if not active:
            pytest.skip("oneDNN prepacked linears are not available in this torch build")
        assert all("forward" in vars(m) for m in linear_modules(stock_llama))
        packed_logits = stock_llama(TOKENS)
        fast = generate(stock_llama, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, keep_logits=True)
    assert (packed_logits - stock).abs().max().item() < 1e-4
    assert fast.layout.token_ids == plain.layout.token_ids and fast.layout.steps == plain.layout.steps
    assert fast.layout.probs[len(PROMPT):] == pytest.approx(plain.layout.probs[len(PROMPT):], abs=1e-5)
    assert max((a - b).abs().max().item() for a, b in zip(fast.step_logits, plain.step_logits)) < 1e-4
    assert not any("forward" in vars(m) for m in linear_modules(stock_llama))
    with torch.no_grad():
        assert torch.equal(stock_llama(TOKENS), stock)


def test_context_manager_keeps_installed_forwards(stock_llama):
    if not install_prepacked_linears(stock_llama):
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    with prepacked_linears(stock_llama):
        pass
    assert len(installed_linears(stock_llama)) == len(linear_modules(stock_llama))
    assert remove_prepacked_linears(stock_llama) == len(linear_modules(stock_llama))
    assert not installed_linears(stock_llama)


def test_installed_forward_repacks_falls_back_and_copies(stock_llama):
    """Edits in place are seen, autograd takes the stock path, and a deep copy packs its own weights."""
    if not install_prepacked_linears(stock_llama):
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    module = linear_modules(stock_llama)[0]
    assert isinstance(vars(module)["forward"], PackedLinearForward)
    x = torch.randn(3, module.in_features)
    with torch.no_grad():
        before = module(x)
        assert torch.equal(module(x[:1]), torch.nn.functional.linear(x[:1], module.weight))  # one row: stock kernel
        module.weight.mul_(2.0)  # in place: the version counter moves
        after = module(x)
        assert (after - 2 * before).abs().max().item() < 1e-4
        module.weight.div_(2.0)
    copied = copy.deepcopy(stock_llama)
    with torch.no_grad():
        copied_module = linear_modules(copied)[0]
        copied_module.weight.zero_()
        assert torch.count_nonzero(copied_module(x)) == 0
        assert (module(x) - before).abs().max().item() < 1e-5  # the original keeps its own packed weight
    out = module(x)  # grad enabled and the weight requires grad: stock F.linear, so gradients flow
    out.sum().backward()
    assert module.weight.grad is not None and torch.allclose(module.weight.grad, x.sum(0).expand_as(module.weight))
