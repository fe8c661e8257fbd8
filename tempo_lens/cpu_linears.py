"""Opt-in CPU speed-up: run the model's linear layers on oneDNN with prepacked weights.

On CPU, a forward of 2-8 new tokens costs 1.5-2x one token with the stock weight layout (small-row
matrix products reread every weight); with oneDNN-prepacked weights (what torch.compile's CPU weight
freezing uses) k = 1..8 rows cost about the same, so a TEMPO step with several siblings becomes almost
as cheap as a one-token decode (``benchmarks/RESULTS.md``, target 1c). Inside :func:`prepacked_linears`
the Hugging Face ``nn.Linear`` modules get instance-level ``forward`` overrides; TransformerLens and every
hook are untouched. Inference only (no autograd through the packed weights), fp32 CPU only, and the packed
copy holds a second copy of the linear weights while active. It packs on entry, so weights edited before
entering are used. Where oneDNN is unavailable it changes nothing (``available`` says which).

Example::

    with prepacked_linears(model):
        result = generate(model, "The cat sat on the", threshold=0.1)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor


def pack_weight(weight: Tensor) -> Tensor | None:
    """A oneDNN-prepacked copy of an fp32 CPU linear weight, or None where oneDNN cannot take it."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        torch.ops.mkldnn._linear_pointwise(torch.zeros(1, weight.shape[1]), packed, None, "none", [None], "")
        return packed
    except (RuntimeError, AttributeError):  # private op missing or refusing this build
        return None


def packed_linear(x: Tensor, packed: Tensor, bias: Tensor | None = None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")


def linear_modules(model: Any) -> list[torch.nn.Linear]:
    """The distinct ``nn.Linear`` modules of the bridge's Hugging Face model."""
    seen, modules = set(), []
    for module in model.original_model.modules():
        if isinstance(module, torch.nn.Linear) and id(module) not in seen:
            seen.add(id(module))
            modules.append(module)
    return modules


class PrepackedLinears:
    """Prepacked copies of a bridge's linear weights, switched in by :meth:`active`.

    Packing happens once, here; ``available`` is False where oneDNN cannot take every weight (then
    :meth:`active` changes nothing). Build a new one after editing the weights.
    """

    def __init__(self, model: Any):
        self.modules = linear_modules(model)
        self.packed = [pack_weight(m.weight) for m in self.modules]
        self.available = bool(self.modules) and all(p is not None for p in self.packed)

    @contextlib.contextmanager
    def active(self) -> Iterator[bool]:
        if not self.available:
            yield False
            return
        for module, weight in zip(self.modules, self.packed):
            module.forward = lambda x, weight=weight, bias=module.bias: packed_linear(x, weight, bias)
        try:
            with torch.no_grad():
                yield True
        finally:
            for module in self.modules:
                del module.forward


def prepacked_linears(model: Any):
    """Pack now and run the model's linears on the packed weights inside the block; yields whether it could."""
    return PrepackedLinears(model).active()
