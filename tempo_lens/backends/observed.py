"""Whether anything observes a module: the one predicate a speed path asks before it skips a hook point.

A hook point can be observed three ways: TransformerLens's own hooks (``add_hook``, ``model.hooks``,
``run_with_hooks``, ``run_with_cache``), plain torch hooks on the module (``register_forward_hook`` and its
pre-, backward, ``with_kwargs`` and ``always_call`` forms, the baukit / nnsight habit), and torch's global
module hooks (``torch.nn.modules.module.register_module_forward_hook`` and kin), which fire on every module.
TransformerLens registers its hooks as torch hooks, so its lists are read too only for a hook point that
keeps them apart. A speed path asks :func:`has_hooks` on every forward, so a hook added between two
forwards (during a generation) fires from the next forward on.
"""

from __future__ import annotations

from typing import Any

from torch.nn.modules import module as _torch_module


def has_hooks(module: Any) -> bool:
    """Whether calling ``module`` would run any hook: TransformerLens's, torch's on ``module``, or torch's global ones."""
    return bool(
        getattr(module, "fwd_hooks", None)
        or getattr(module, "bwd_hooks", None)
        or module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _torch_module._global_forward_hooks
        or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks
        or _torch_module._global_backward_pre_hooks
    )
