"""Lean dispatch: the same bits and the same hooks as the stock bridge, per model instance, and undone cleanly."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch

from tempo_lens import load_model
from tempo_lens.generation import generate
from tempo_lens.backends.bridge.lean_dispatch import lean_components, lean_dispatch, restore_dispatch, stock_dispatch

PROMPT = [1, 17, 42, 5, 63, 8]
TOKENS = torch.tensor([PROMPT])


@pytest.fixture(params=["llama", "gpt2", "qwen2"])
def stock_model(request, tiny_dirs):
    return load_model(str(tiny_dirs[request.param]), device="cpu", fast=False)


def _run(model):
    seen = []

    def record(x, hook):
        seen.append((hook.name, x.detach().clone()))

    names = ["blocks.0.hook_in", "blocks.1.attn.hook_pattern", "ln_final.hook_in", "blocks.0.mlp.hook_out"]
    names = [n for n in names if n in model.hook_dict]
    with torch.no_grad():
        logits = model.run_with_hooks(TOKENS, fwd_hooks=[(n, record) for n in names])
    result = generate(model, PROMPT, threshold=1e-6, max_parallel=3, max_steps=3, capture=True, keep_logits=True)
    return logits, seen, result


def test_bit_identical_with_every_hook_firing(stock_model):
    assert lean_components(stock_model) == []
    stock_logits, stock_seen, stock_result = _run(stock_model)
    assert lean_dispatch(stock_model) > 0
    logits, seen, result = _run(stock_model)
    assert torch.equal(logits, stock_logits)
    assert [n for n, _ in seen] == [n for n, _ in stock_seen] and len(seen) >= 3
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(seen, stock_seen))
    assert result.layout.token_ids == stock_result.layout.token_ids
    assert all(torch.equal(a, b) for a, b in zip(result.step_logits, stock_result.step_logits))
    assert list(result.capture) == list(stock_result.capture) == list(range(result.layout.n_steps))
    for step in result.capture:
        assert np.array_equal(np.asarray(result.capture[step]), np.asarray(stock_result.capture[step]))


def test_per_instance_and_undone(tiny_dirs):
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    lean = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    other = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    lean_dispatch(lean)
    block = lean.blocks[0]
    assert isinstance(block, BlockBridge) and type(block) is not BlockBridge
    assert type(other.blocks[0]) is BlockBridge and "__call__" not in vars(BlockBridge)  # the class is untouched
    assert repr(block).startswith("BlockBridge(")
    twin = copy.deepcopy(lean)
    assert twin.blocks[0]._filter_kwargs_for_forward.block is twin.blocks[0]  # bound to the copy
    with stock_dispatch(lean):
        assert lean_components(lean) == [] and type(lean.blocks[0]) is BlockBridge
    assert len(lean_components(lean)) == len(lean_components(twin)) > 0
    restore_dispatch(lean)
    assert lean_components(lean) == [] and "_filter_kwargs_for_forward" not in vars(lean.blocks[0])


def test_offloaded_components_keep_the_device_alignment(tiny_dirs, monkeypatch):
    """A wrapped module carrying an Accelerate hook still goes through align_module_device."""
    import transformer_lens.model_bridge.generalized_components.base as base

    if not hasattr(base, "align_module_device"):
        pytest.skip("this TransformerLens calls components without Accelerate's device alignment (3.x)")
    aligned = []

    @contextlib.contextmanager
    def recording(module, *args, **kwargs):
        aligned.append(module)
        yield

    monkeypatch.setattr(base, "align_module_device", recording)
    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    lean_dispatch(model)
    aligned.clear()  # loading walks the modules once
    with torch.no_grad():
        model(TOKENS)
    assert aligned == []  # nothing offloaded: the empty context is skipped
    target = model.blocks[0].mlp.original_component
    target._hf_hook = object()  # what Accelerate attaches to an offloaded module
    with stock_dispatch(model), torch.no_grad():
        model(TOKENS)
    stock_calls = list(aligned)
    assert target in stock_calls
    aligned.clear()
    with torch.no_grad():
        model(TOKENS)
    assert aligned == [target]  # the stock path aligns every component; the lean one only the offloaded


def test_a_replaced_wrapped_layer_is_read_afresh(tiny_dirs):
    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    lean_dispatch(model)
    block = model.blocks[0]
    kwargs = {"attention_mask": None, "not_a_parameter": 1}
    assert block._filter_kwargs_for_forward(kwargs) == type(block).__mro__[1]._filter_kwargs_for_forward(block, kwargs)

    def forward(hidden_states, **anything):
        return hidden_states

    block.original_component.forward = forward  # accepts **kwargs: everything passes
    assert block._filter_kwargs_for_forward(kwargs) == kwargs


def test_a_pickled_component_loads_in_a_fresh_process(tiny_dirs):
    import pickle
    import subprocess
    import sys

    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    lean_dispatch(model)
    code = ("import pickle, sys; x = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(x).__name__, type(x)._tempo_lens_lean_base.__name__)")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(model.ln_final), capture_output=True, check=True)
    assert out.stdout.decode().split() == [type(model.ln_final).__name__] * 2


def test_hook_points_fire_whenever_something_listens(tiny_dirs):
    """Lean hook points return their input while unhooked; a hook on them, or a global module hook, still sees every call."""
    from transformer_lens.hook_points import HookPoint

    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=False)
    with torch.no_grad():
        _, stock_cache = model.run_with_cache(TOKENS)
    lean_dispatch(model)
    points = [m for m in lean_components(model) if isinstance(m, HookPoint)]
    assert points and all(type(m) is not HookPoint for m in points)
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS)
    assert list(cache.keys()) == list(stock_cache.keys())
    assert all(torch.equal(cache[name], stock_cache[name]) for name in stock_cache.keys())
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(module) if isinstance(module, HookPoint) else None
    )
    try:
        with torch.no_grad():
            model(TOKENS)
    finally:
        handle.remove()
    assert len({id(m) for m in seen}) >= len(stock_cache.keys()) // 2
    restore_dispatch(model)
    assert all(type(m) is HookPoint for m in points)
