"""The norm fast path: bit-identical logits, and every norm hook still fires when attached."""

from __future__ import annotations

import copy

import pytest
import torch

from tempo_lens import load_model
from tempo_lens.backends.bridge.fast_norms import (
    fast_norms, patched_norms, restore_norm_statistics, skip_unobserved_norm_statistics, stock_norms,
)
from tempo_lens.generation import generate

TOKENS = torch.tensor([[1, 17, 42, 5, 63, 8]])


@pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale")  # TransformerLens notes the edit fallback
def test_identical_logits_and_hooks_still_fire(tiny_dirs):
    stock = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    fast = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    assert skip_unobserved_norm_statistics(fast) == 2 * 3 + 1  # ln1, ln2 per block and ln_final
    assert skip_unobserved_norm_statistics(fast) == 0  # idempotent
    with torch.no_grad():
        assert torch.equal(stock(TOKENS), fast(TOKENS))
        names = lambda name: name.endswith(("hook_scale", "hook_normalized"))
        _, cache_stock = stock.run_with_cache(TOKENS, names_filter=names)
        _, cache_fast = fast.run_with_cache(TOKENS, names_filter=names)
    assert set(cache_fast.keys()) == set(cache_stock.keys()) and len(cache_fast.keys()) == 2 * 7
    for name in cache_stock.keys():
        assert torch.equal(cache_stock[name], cache_fast[name])

    def zero(x, hook):
        return torch.zeros_like(x)

    hooks = [("blocks.1.ln2.hook_normalized", zero)]
    with torch.no_grad():
        assert torch.allclose(stock.run_with_hooks(TOKENS, fwd_hooks=hooks), fast.run_with_hooks(TOKENS, fwd_hooks=hooks))
        assert not torch.allclose(fast.run_with_hooks(TOKENS, fwd_hooks=hooks), fast(TOKENS))
    a = generate(stock, TOKENS[0].tolist(), threshold=1e-6, max_parallel=3, max_steps=3, keep_logits=True)
    b = generate(fast, TOKENS[0].tolist(), threshold=1e-6, max_parallel=3, max_steps=3, keep_logits=True)
    assert all(torch.equal(x, y) for x, y in zip(a.step_logits, b.step_logits))


def test_context_managers_restore_the_bridge(tiny_dirs):
    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    with fast_norms(model) as patched:
        assert patched == 7 and "_hf_autograd_forward_with_hooks" in vars(model.blocks[0].ln1)
    assert "_hf_autograd_forward_with_hooks" not in vars(model.blocks[0].ln1)
    assert restore_norm_statistics(model) == 0
    skip_unobserved_norm_statistics(model)  # on already (the default): a fast_norms block leaves it on
    with fast_norms(model) as patched:
        assert patched == 0
    with stock_norms(model) as was_fast:
        assert was_fast == 7 and not patched_norms(model)
    assert len(patched_norms(model)) == 7


def test_deep_copy_runs_its_own_norms(tiny_dirs):
    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    skip_unobserved_norm_statistics(model)
    copied = copy.deepcopy(model)
    with torch.no_grad():
        copied.ln_final.original_component.weight.zero_()
        assert torch.count_nonzero(copied(TOKENS)) == 0
        assert torch.count_nonzero(model(TOKENS)) > 0
