"""Sliding windows of a HookedTransformer (``attn_type == "local"`` layers, ``cfg.window_size``).

TransformerLens masks a local layer by column index of the batch (``_make_causal_mask``). Padding and
rows sharing a lane put other columns between a row's tokens, so a TEMPO step switches that window off
and TEMPO's mask hooks apply each row's window from its layout (the physical-distance rule of
``docs/definitions.md``). :func:`without_own_windows` does it for one forward, on this model's local
attention modules only, and removes what it installed on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from ...errors import InvalidInputError

_OWN = "_make_causal_mask"


def model_windows(model: Any) -> list[int | None]:
    """Each layer's window (``cfg.window_size`` on local layers), None on global ones."""
    window = getattr(model.cfg, "window_size", None)
    local = [getattr(block.attn, "attn_type", "global") == "local" for block in model.blocks]
    if window is None:
        return [None] * len(local)
    return [int(window) if is_local else None for is_local in local]


def _causal(query_ctx_length: int, key_ctx_length: int, past_kv_pos_offset: int, device: torch.device) -> Tensor:
    """TransformerLens's causal mask without the window: ``[1, 1, q, K]``, True where a query may attend."""
    queries = torch.arange(past_kv_pos_offset, past_kv_pos_offset + query_ctx_length, device=device)
    keys = torch.arange(key_ctx_length, device=device)
    return (keys[None, :] <= queries[:, None])[None, None]


@contextmanager
def without_own_windows(model: Any) -> Iterator[None]:
    """For the block: this model's local layers mask causally only (an instance attribute, deleted on exit)."""
    local = [block.attn for block in model.blocks if getattr(block.attn, "attn_type", "global") == "local"]
    if local and not hasattr(type(local[0]), _OWN):
        raise InvalidInputError(
            "this TransformerLens builds its local-attention mask inline, so TEMPO cannot apply the sliding window "
            "by each row's physical distance; use TransformerLens 3.9 or later, or backend='bridge'"
        )
    for attn in local:
        attn.__dict__[_OWN] = _causal
    try:
        yield
    finally:
        for attn in local:
            attn.__dict__.pop(_OWN, None)
