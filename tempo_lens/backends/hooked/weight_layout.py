"""Speed-up: store a HookedTransformer's weights in the layout its forward reads, so no call copies them.

TransformerLens 3.9's forward rearranges several weights on every call before ``F.linear``: the gated MLP
and the unembedding take ``W.T.contiguous()``, attention flattens ``W_Q`` / ``W_K`` / ``W_V`` to
``[(head d_head), d_model]`` and ``W_O`` to ``[d_model, (head d_head)]``. Stored as they load, each of those is
a full copy of the weight per forward (on the embedded model about 4x the cost of a decode step).
:func:`store_weights_as_read` keeps every such parameter's shape and values and changes only its strides, so
the rearrangement is a view and ``.contiguous()`` returns the tensor itself: ``F.linear`` then receives the
same numbers in the same memory order as before, and logits are bit-identical (tested).
:func:`restore_weight_layout` makes them contiguous again.
"""

from __future__ import annotations

from typing import Any

import torch

# parameter name -> the order of its dimensions in memory (the layout the forward reads)
Orders = dict[str, tuple[int, ...]]
_ATTENTION: Orders = {
    "W_Q": (0, 2, 1),
    "W_K": (0, 2, 1),
    "W_V": (0, 2, 1),
    "_W_K": (0, 2, 1),
    "_W_V": (0, 2, 1),
    "W_O": (2, 0, 1),
}
_GATED_MLP: Orders = {"W_gate": (1, 0), "W_in": (1, 0), "W_out": (1, 0)}
_UNEMBED: Orders = {"W_U": (1, 0)}
_FLAG = "_tempo_lens_weights_as_read"


def _targets(model: Any) -> list[tuple[torch.nn.Module, Orders]]:
    """Modules whose forward rearranges weights, with the memory order each parameter should have."""
    from transformer_lens.components import AbstractAttention, Unembed  # deferred: transformer_lens
    from transformer_lens.components.mlps.gated_mlp import GatedMLP  # deferred: transformer_lens

    split_inputs = bool(model.cfg.use_split_qkv_input or model.cfg.use_attn_in or model.cfg.use_attn_result)
    out: list[tuple[torch.nn.Module, Orders]] = []
    for module in model.modules():
        if isinstance(module, AbstractAttention) and not split_inputs:
            out.append((module, _ATTENTION))
        elif type(module) is GatedMLP:
            out.append((module, _GATED_MLP))
        elif type(module) is Unembed:
            out.append((module, _UNEMBED))
    return out


def _relayout(module: torch.nn.Module, name: str, order: tuple[int, ...] | None) -> bool:
    """Give ``module.name`` memory order ``order`` (None: contiguous); returns whether it changed."""
    param = module._parameters.get(name)
    if param is None or (order is not None and param.ndim != len(order)):
        return False
    data = param.detach()
    if order is None:
        stored = data.contiguous()
    else:
        inverse = tuple(order.index(i) for i in range(len(order)))
        stored = data.permute(order).contiguous().permute(inverse)
    if stored.stride() == data.stride():
        return False
    module._parameters[name] = torch.nn.Parameter(stored, requires_grad=param.requires_grad)
    return True


def store_weights_as_read(model: Any) -> int:
    """Re-store the weights the forward rearranges in the order it reads them; returns how many changed."""
    changed = 0
    for module, orders in _targets(model):
        for name, order in orders.items():
            if _relayout(module, name, order):
                changed += 1
                setattr(module, _FLAG, True)
    return changed


def weights_stored_as_read(model: Any) -> int:
    """How many modules hold weights re-stored by :func:`store_weights_as_read`."""
    return sum(1 for m in model.modules() if getattr(m, _FLAG, False))


def restore_weight_layout(model: Any) -> int:
    """Make the re-stored weights contiguous again (the layout they load in); returns how many changed."""
    changed = 0
    for module, orders in _targets(model):
        if getattr(module, _FLAG, False):
            changed += sum(_relayout(module, name, None) for name in orders)
            delattr(module, _FLAG)
    return changed
