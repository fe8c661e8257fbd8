"""Shared RoPE positions on a TransformerBridge, through ``rotary_emb.hook_cos`` / ``hook_sin``.

The bridge computes one cos/sin table per rotary call (``[batch, q, d_head]``) and every attention
layer reads it, so the hooks return the model's own rotary embedding (``rotary_emb.original_component``,
which fires no hooks) evaluated at the wanted positions; llama3 / linear / yarn scaling stay exact.
Some models call their rotary embedding once per attention type with different arguments (Gemma 3:
``layer_type``, full attention with base 1e6, sliding with 1e4). The hooks tell the calls apart by
their values: the incoming table is the embedding at the forward's physical positions, which matches
exactly one attention type's table there. Nothing is installed outside the hook points.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ...hook_cache import HookCache
from ...position_source import PositionSource, last_positions, positions_of
from ..base import Hook


def _fit(table: Tensor, reference: Tensor) -> Tensor:
    """A cos/sin table shaped like the hook's input, or ``[batch, q, d_head]`` when it has one row per batch row."""
    return table if table.shape[0] != reference.shape[0] else table.expand_as(reference)


def rotary_call_variants(rotary: Any) -> list[dict[str, Any]]:
    """The keyword sets the model calls its rotary embedding with in one forward (``[{}]`` for most models)."""
    layer_types = getattr(rotary, "layer_types", None)
    try:
        takes_layer_type = "layer_type" in inspect.signature(rotary.forward).parameters
    except (TypeError, ValueError):
        takes_layer_type = False
    if takes_layer_type and layer_types:
        return [{"layer_type": t} for t in layer_types]
    return [{}]


def bridge_rope_hooks(model: Any, positions: PositionSource) -> list[Hook]:
    """``rotary_emb.hook_cos`` / ``hook_sin`` hooks giving the model's rotary tables at ``positions``."""
    rotary = model.rotary_emb.original_component
    variants = rotary_call_variants(rotary)
    # one forward asks for each variant's tables at the physical and at the wanted positions, for cos and sin
    cache: HookCache[tuple[tuple, int], tuple[Tensor, Tensor]] = HookCache(size=4 * len(variants))

    def tables(reference: Tensor, variant: int, key: tuple, wanted: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        """The rotary tables at ``wanted()`` positions for one call variant, cached by ``key`` (positions built on a miss only)."""

        def make() -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                cos, sin = rotary(reference, wanted(), **variants[variant])
            return cos.to(reference.dtype), sin.to(reference.dtype)

        return cache.get((key, variant), make)

    def variant_of(incoming: Tensor, which: int, n_all: int) -> int:
        """Which rotary call produced ``incoming`` (compared at the forward's physical positions)."""
        n = incoming.shape[-2]

        def physical() -> Tensor:
            return torch.arange(n_all - n, n_all, device=incoming.device, dtype=torch.float32)[None, :]

        for i in range(len(variants)):
            table = tables(incoming, i, ("physical", n_all, n, incoming.dtype, incoming.device), physical)[which]
            if torch.allclose(table.expand_as(incoming), incoming, rtol=1e-5, atol=1e-6):
                return i
        raise RuntimeError("rotary_emb.hook_cos received a table that matches none of the model's rotary calls")

    def replace(incoming: Float[Tensor, "batch query_pos d_head"], which: int) -> Tensor:
        get_positions, source_key = positions_of(positions)
        n = incoming.shape[-2]
        variant = 0 if len(variants) == 1 else variant_of(incoming, which, get_positions().shape[-1])

        def wanted() -> Tensor:
            chosen = last_positions(get_positions(), n).to(device=incoming.device, dtype=torch.float32)
            return chosen[None, :] if chosen.ndim == 1 else chosen

        return _fit(tables(incoming, variant, (source_key, n, incoming.dtype, incoming.device), wanted)[which], incoming)

    def hook_cos(cos: Float[Tensor, "batch query_pos d_head"], hook: Any = None) -> Tensor:
        return replace(cos, 0)

    def hook_sin(sin: Float[Tensor, "batch query_pos d_head"], hook: Any = None) -> Tensor:
        return replace(sin, 1)

    return [("rotary_emb.hook_cos", hook_cos), ("rotary_emb.hook_sin", hook_sin)]
