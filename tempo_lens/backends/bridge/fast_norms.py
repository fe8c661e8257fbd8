"""Speed-up: skip TransformerBridge norm statistics that nothing observes (on by default, :mod:`tempo_lens.backends.bridge.fast_paths`).

TransformerLens 4.3.0's normalization bridges compute the statistics for ``hook_scale`` and
``hook_normalized`` on every call, then return the wrapped Hugging Face module's own output unless a
hook edited them. With no hook attached to either point, that work is thrown away: about 12 % of a
cached decode step of the embedded model on CPU. :func:`skip_unobserved_norm_statistics` gives each
norm bridge of one model an instance-level override that, while neither hook point has any hook
(:func:`~tempo_lens.backends.observed.has_hooks`: TransformerLens's, torch's, global ones; asked on every
call), returns the wrapped module's output directly (the same tensor the bridge returns), and otherwise
takes the bridge's own path, so every hook fires whenever something is attached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..observed import has_hooks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_FLAG = "_tempo_lens_fast_norm"


class _FastNormForward:
    """A norm bridge's forward: the wrapped module alone while neither hook point is observed.

    A callable object rather than a closure, so a deep copy of the model gets one bound to the copy.
    """

    def __init__(self, module: Any):
        self.module = module

    def __call__(self, x: Tensor) -> Tensor:
        module = self.module
        component = module.original_component
        if (
            has_hooks(module.hook_scale)
            or has_hooks(module.hook_normalized)
            or component is None
            or type(component).__name__ == "Identity"
        ):
            return type(module)._hf_autograd_forward_with_hooks(module, x)
        result = component(x)
        return result if result.dtype == x.dtype else result.to(x.dtype)


def skip_unobserved_norm_statistics(model: TransformerBridge) -> int:
    """Patch every norm bridge of ``model`` that takes the native path; returns how many (0 if none apply)."""
    return len(_patch(model))


def patched_norms(model: TransformerBridge) -> list[Any]:
    """The norm bridges of ``model`` that run the fast path."""
    return [module for module in model.modules() if getattr(module, _FLAG, False)]


def _patch(model: TransformerBridge) -> list[Any]:
    return _patch_modules(model.modules())


def _patch_modules(candidates: Iterable[Any]) -> list[Any]:
    # deferred: transformer_lens
    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge

    patched = []
    for module in candidates:
        if not isinstance(module, NormalizationBridge) or getattr(module, _FLAG, False):
            continue
        if not hasattr(module, "_hf_autograd_forward_with_hooks") or not hasattr(module, "hook_scale"):
            continue
        module._hf_autograd_forward_with_hooks = _FastNormForward(module)
        setattr(module, _FLAG, True)
        patched.append(module)
    return patched


def restore_norm_statistics(model: TransformerBridge, modules: list[Any] | None = None) -> int:
    """Undo :func:`skip_unobserved_norm_statistics` (on ``modules``, default all); returns how many were restored."""
    modules = patched_norms(model) if modules is None else modules
    for module in modules:
        del module._hf_autograd_forward_with_hooks
        delattr(module, _FLAG)
    return len(modules)


@contextlib.contextmanager
def fast_norms(model: TransformerBridge) -> Iterator[int]:
    """The fast path inside a ``with`` block only; yields how many norm bridges it newly covers."""
    patched = _patch(model)
    try:
        yield len(patched)
    finally:
        restore_norm_statistics(model, patched)


@contextlib.contextmanager
def stock_norms(model: TransformerBridge) -> Iterator[int]:
    """Inside the block, every norm bridge takes TransformerLens's own path; yields how many were fast before."""
    restored = patched_norms(model)
    restore_norm_statistics(model, restored)
    try:
        yield len(restored)
    finally:
        _patch_modules(restored)
