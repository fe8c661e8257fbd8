"""Speed-up: the bridge's per-call bookkeeping done once per module (on by default, :mod:`tempo_lens.backends.bridge.fast_paths`).

TransformerLens 4.3 spends two pieces of Python on every component call that give the same answer
every time for a model that is not offloaded:

- every block bridge runs ``inspect.signature`` on the wrapped layer's ``forward`` to filter its
  keyword arguments (about 38 µs per block call, 30 per step on the embedded model);
- every component call enters Accelerate's ``align_module_device``, which is a bare ``yield`` unless
  the wrapped module carries an Accelerate offload hook (``_hf_hook``);
- every component and hook point (about 360 and 900 per forward of the embedded model) goes through
  ``nn.Module.__call__``, which only calls ``forward`` when no torch hook is attached (2-3 µs each); a hook
  point's forward returns its input unchanged.

:func:`lean_dispatch` gives the components of one model an instance-level form of each: the block's
filter reads a signature computed once per wrapped ``forward`` (the same kwargs come out), and a
component whose wrapped module has no ``_hf_hook`` is called as a plain ``nn.Module`` (what the context
manager reduces to); a component that does carry one keeps the stock path. While neither a module nor
torch's global registries hold a torch hook, a component calls its ``forward`` and a hook point returns its
input directly (what ``nn.Module.__call__`` then does, minus the calls); otherwise both take the stock call,
so an attached hook always fires.
Nothing changes what a forward computes or which hooks fire, so logits are bit-identical (tested).

The call path is per instance: the component's class is swapped for a subclass that differs only in
``__call__`` (Python looks ``__call__`` up on the type); :func:`restore_dispatch` swaps it back.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch.nn.modules import module as _torch_module

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger("tempo_lens")
_FILTER = "_filter_kwargs_for_forward"
_NOTED: list[bool] = []
_LEAN_PREFIX = "_LeanDispatch_"


class _CachedKwargsFilter:
    """A block bridge's kwargs filter, with the wrapped ``forward``'s signature read once.

    Keyed on the function behind ``forward``, so a replaced wrapped layer is read afresh. A callable
    object rather than a closure, so a deep copy of the model gets one bound to the copy.
    """

    def __init__(self, block: Any):
        self.block = block
        self._key: Any = None
        self._names: list[str] = []
        self._valid: frozenset[str] = frozenset()
        self._var_keyword = False

    def __call__(self, kwargs: dict[str, Any], num_positional_args: int = 0) -> dict[str, Any]:
        component = self.block.original_component
        if component is None:
            return kwargs
        forward = component.forward
        key = getattr(forward, "__func__", forward)
        if key is not self._key:
            parameters = inspect.signature(forward).parameters
            self._names = list(parameters)
            self._valid = frozenset(self._names)
            self._var_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            self._key = key
        if self._var_keyword:
            return kwargs
        positional = set(self._names[:num_positional_args])
        return {k: v for k, v in kwargs.items() if k in self._valid and k not in positional}


def _torch_hooks_present(module: Any) -> bool:
    """Whether ``nn.Module.__call__`` would do more than call ``forward``: torch hooks on ``module`` or global ones,
    a compiled call, or JIT tracing (TransformerLens's hooks are torch hooks on its hook points)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or module._compiled_call_impl is not None
        or _torch_module._global_forward_hooks
        or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks
        or _torch_module._global_backward_pre_hooks
        or torch._C._get_tracing_state()
    )


def _lean_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    component = self._modules.get("_original_component")
    if component is not None and getattr(component, "_hf_hook", None) is not None:
        return type(self)._tempo_lens_lean_base.__call__(self, *args, **kwargs)  # offloaded: the stock path materialises it
    if _torch_hooks_present(self):
        return nn.Module.__call__(self, *args, **kwargs)
    return self.forward(*args, **kwargs)


def _lean_hook_call(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs or _torch_hooks_present(self):
        return nn.Module.__call__(self, x, *args, **kwargs)
    return x  # HookPoint.forward is the identity


def _lean_class(base: type) -> type:
    """One subclass of ``base`` per base class, differing only in ``__call__``.

    It keeps ``__name__`` (so ``repr(model)`` reads as before). Its qualified name encodes ``base``, and this
    module builds it again on first lookup (:func:`__getattr__`), so a pickled component loads in a fresh process.
    """
    attribute = _LEAN_PREFIX + base.__module__.replace(".", ":") + "::" + base.__qualname__.replace(".", ":")
    lean = vars(sys.modules[__name__]).get(attribute)
    if lean is None:
        call = _lean_hook_call if _is_plain_hook_point_class(base) else _lean_call
        lean = type(
            base.__name__,
            (base,),
            {"__call__": call, "__module__": __name__, "__qualname__": attribute, "_tempo_lens_lean_base": base},
        )
        setattr(sys.modules[__name__], attribute, lean)
    return lean


def __getattr__(name: str) -> type:
    """The lean class named ``name`` (pickle looks classes up by module and qualified name)."""
    if not name.startswith(_LEAN_PREFIX) or "::" not in name:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, qualname = name[len(_LEAN_PREFIX) :].split("::", 1)
    base: Any = importlib.import_module(module_name.replace(":", "."))
    for part in qualname.split(":"):
        base = getattr(base, part)
    return _lean_class(base)


def _is_lean(module: Any) -> bool:
    return type(module).__dict__.get("_tempo_lens_lean_base") is not None


def _is_plain_hook_point_class(cls: type) -> bool:
    """TransformerLens's ``HookPoint`` itself (its forward is the identity), not a subclass that may differ."""
    from transformer_lens.hook_points import HookPoint

    return cls is HookPoint


def _components(model: TransformerBridge) -> Iterator[Any]:
    """The bridge components and plain hook points of ``model`` (a hook point with its own ``forward`` is left out)."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    for m in model.modules():
        if isinstance(m, GeneralizedComponent):
            yield m
        else:
            base = type(m).__dict__.get("_tempo_lens_lean_base", type(m))
            if _is_plain_hook_point_class(base) and "forward" not in vars(m):
                yield m


def _make_lean(module: Any) -> None:
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    if isinstance(module, BlockBridge) and hasattr(type(module), _FILTER):
        setattr(module, _FILTER, _CachedKwargsFilter(module))
    module.__class__ = _lean_class(type(module))


def _note_missing_internals() -> None:
    """One logged line per process when this TransformerLens lacks an internal the lean path skips (TL 3.x)."""
    import transformer_lens.model_bridge.generalized_components.base as base
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    missing = [
        what
        for what, present in (
            ("per-call device alignment", hasattr(base, "align_module_device")),
            ("per-call kwargs filter", hasattr(BlockBridge, _FILTER)),
        )
        if not present
    ]
    if missing and not _NOTED:
        _NOTED.append(True)
        log.info("lean dispatch: this TransformerLens has no %s; those calls keep the stock path", " or ".join(missing))


def lean_dispatch(model: TransformerBridge) -> int:
    """Give every bridge component of ``model`` the lean forms; returns how many components changed."""
    _note_missing_internals()
    changed = [m for m in _components(model) if not _is_lean(m)]
    for module in changed:
        _make_lean(module)
    return len(changed)


def lean_components(model: TransformerBridge) -> list[Any]:
    """The components of ``model`` on the lean path."""
    return [m for m in _components(model) if _is_lean(m)]


def lean_hook_points(model: TransformerBridge) -> list[Any]:
    """The hook points of ``model`` on the lean path (they return their input directly while unhooked)."""
    return [m for m in lean_components(model) if type(m).__call__ is _lean_hook_call]


def restore_dispatch(model: TransformerBridge, modules: list[Any] | None = None) -> list[Any]:
    """Undo :func:`lean_dispatch` (on ``modules``, default all); returns the components restored."""
    modules = lean_components(model) if modules is None else modules
    for module in modules:
        module.__class__ = type(module).__dict__["_tempo_lens_lean_base"]
        module.__dict__.pop(_FILTER, None)
    return modules


@contextlib.contextmanager
def stock_dispatch(model: TransformerBridge) -> Iterator[None]:
    """Inside the block ``model`` calls its components the stock way; the lean forms come back after."""
    restored = restore_dispatch(model)
    try:
        yield
    finally:
        for module in restored:
            if not _is_lean(module):
                _make_lean(module)
