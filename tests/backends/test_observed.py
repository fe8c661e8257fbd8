"""One predicate decides whether a hook point is observed, and every speed path leaves an observed one alone.

A user's hook, TransformerLens's or a plain torch one (the baukit / nnsight habit), on any kind of hook point
a speed path touches (norm statistics, linear inputs and outputs, attention, MLP, residual) fires once per
forward of a generation with the speed paths on, and sees what it sees with them off (the stock
TransformerBridge, itself checked against HF eager elsewhere).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn.modules import module as torch_module

from tempo_lens import load_model
from tempo_lens.backends.bridge.fast_paths import fast_paths_on, stock_paths
from tempo_lens.backends.observed import has_hooks
from tempo_lens.generation import generate

POINTS = (
    "blocks.0.ln1.hook_normalized",
    "blocks.0.ln1.hook_scale",
    "blocks.1.ln2.hook_scale",
    "ln_final.hook_normalized",
    "blocks.0.ln1.hook_out",
    "blocks.0.attn.q.hook_out",
    "blocks.1.mlp.out.hook_in",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.1.mlp.hook_post",
    "blocks.1.hook_resid_post",
)
KINDS = ("transformer_lens", "forward", "forward_pre", "forward_with_kwargs", "global")
PROMPT = [1, 17, 42, 5, 63, 8]


def _attach(point, kind: str, seen: list[torch.Tensor]):
    """One hook of ``kind`` on ``point`` recording what it sees; returns its remover."""

    def record(x) -> None:
        seen.append(x.detach().clone())

    if kind == "transformer_lens":
        point.add_hook(lambda x, hook: record(x))
        return lambda: point.remove_hooks("fwd")
    if kind == "forward":
        handle = point.register_forward_hook(lambda m, args, out: record(out))
    elif kind == "forward_pre":
        handle = point.register_forward_pre_hook(lambda m, args: record(args[0]))
    elif kind == "forward_with_kwargs":
        handle = point.register_forward_hook(lambda m, args, kwargs, out: record(out), with_kwargs=True, always_call=True)
    else:
        handle = torch_module.register_module_forward_hook(lambda m, args, out: record(out) if m is point else None)
    return handle.remove


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def fast_model(request, tiny_dirs):
    model = load_model(str(tiny_dirs[request.param]), device="cpu", fast=True)
    assert any(line.startswith("fast norms") for line in fast_paths_on(model))
    return model


def _generate(model):
    return generate(model, PROMPT, threshold=1e-6, max_parallel=3, max_steps=3, keep_logits=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", POINTS)
def test_a_hook_fires_once_per_forward_and_sees_the_stock_values(fast_model, name, kind):
    if name not in fast_model.hook_dict:
        pytest.skip(f"{name} is not a hook point of this model")
    point = fast_model.hook_dict[name]
    forwards: list[torch.Tensor] = []
    seen: dict[str, list[torch.Tensor]] = {"fast": [], "stock": []}
    for label in ("fast", "stock"):
        forwards.clear()
        counter = fast_model.hook_dict["hook_embed"].register_forward_hook(lambda m, a, out: forwards.append(out))
        remove = _attach(point, kind, seen[label])
        try:
            if label == "stock":
                with stock_paths(fast_model):
                    _generate(fast_model)
            else:
                _generate(fast_model)
        finally:
            remove()
            counter.remove()
        assert len(seen[label]) == len(forwards) > 1, f"{label}: {len(seen[label])} calls in {len(forwards)} forwards"
    assert not has_hooks(point)
    for fast, stock in zip(seen["fast"], seen["stock"]):
        assert fast.shape == stock.shape
        torch.testing.assert_close(fast, stock, atol=1e-5, rtol=1e-5)


def test_a_hook_added_during_generation_fires_from_the_next_forward(fast_model):
    """The speed paths decide per forward: a torch hook attached by another hook during step 1 fires after."""
    point = fast_model.hook_dict["blocks.0.ln1.hook_normalized"]
    calls: list[int] = []
    forwards: list[int] = []
    handles = []

    def attach_on_second_forward(module, args, out):
        forwards.append(1)
        if len(forwards) == 2:
            handles.append(point.register_forward_hook(lambda m, a, o: calls.append(len(forwards))))

    counter = fast_model.hook_dict["hook_embed"].register_forward_hook(attach_on_second_forward)
    try:
        _generate(fast_model)
    finally:
        counter.remove()
        for handle in handles:
            handle.remove()
    assert len(forwards) > 2 and calls == list(range(2, len(forwards) + 1))


def test_has_hooks_sees_every_kind_of_hook():
    from transformer_lens.hook_points import HookPoint

    point = HookPoint()
    assert not has_hooks(point)
    registrations = [
        lambda: point.register_forward_hook(lambda m, a, o: None),
        lambda: point.register_forward_hook(lambda m, a, k, o: None, with_kwargs=True),
        lambda: point.register_forward_hook(lambda m, a, o: None, always_call=True),
        lambda: point.register_forward_pre_hook(lambda m, a: None),
        lambda: point.register_full_backward_hook(lambda m, gi, go: None),
        lambda: point.register_full_backward_pre_hook(lambda m, go: None),
        lambda: torch_module.register_module_forward_hook(lambda m, a, o: None),
        lambda: torch_module.register_module_forward_pre_hook(lambda m, a: None),
        lambda: torch_module.register_module_full_backward_hook(lambda m, gi, go: None),
        lambda: torch_module.register_module_full_backward_pre_hook(lambda m, go: None),
    ]
    for register in registrations:
        handle = register()
        assert has_hooks(point)
        handle.remove()
        assert not has_hooks(point)
    for direction in ("fwd", "bwd"):
        point.add_hook(lambda x, hook: None, dir=direction)
        assert has_hooks(point)
        point.remove_hooks(direction)
        assert not has_hooks(point)


@pytest.mark.parametrize("component", ["blocks.0.attn.q", "blocks.1.mlp.out"])
def test_a_torch_hook_on_a_wrapped_linear_fires_once_per_forward(fast_model, component):
    """The prepacked kernels replace ``nn.Linear.forward`` only: a hook on the Hugging Face linear itself still fires."""
    linear = fast_model.get_submodule(component).original_component
    forwards: list[int] = []
    seen: dict[str, list[torch.Tensor]] = {"fast": [], "stock": []}
    for label in ("fast", "stock"):
        forwards.clear()
        counter = fast_model.hook_dict["hook_embed"].register_forward_hook(lambda m, a, out: forwards.append(1))
        handle = linear.register_forward_hook(lambda m, args, out, into=seen[label]: into.append(out.detach().clone()))
        try:
            with stock_paths(fast_model) if label == "stock" else contextlib.nullcontext():
                _generate(fast_model)
        finally:
            handle.remove()
            counter.remove()
        assert len(seen[label]) == len(forwards) > 1
    for fast, stock in zip(seen["fast"], seen["stock"]):
        torch.testing.assert_close(fast, stock, atol=1e-5, rtol=1e-5)
