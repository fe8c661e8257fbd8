"""Sliding windows of a Hugging Face model, and the plain causal mask a TEMPO step passes instead of its own.

transformers builds a sliding layer's mask from column indices of the batch, and a ``DynamicCache``
built from the config keeps only the last ``sliding_window`` keys of those layers. Padding and rows
sharing a lane put other columns between a row's tokens, so TEMPO keeps every key and applies each
layer's window from the row's own layout (the physical-distance rule of ``docs/definitions.md``). A 4D
mask given to the model is used as it is on every layer, so a causal one switches the model's windows off.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InvalidInputError

SLIDING_TYPES = ("sliding_attention",)  # other layer types (full, linear, ...) have no window


def config_windows(config: Any, n_layers: int) -> list[int | None]:
    """Each layer's sliding window from a transformers config (``layer_types`` + ``sliding_window``), None for full attention."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    if types is None:
        return [int(window) if window is not None else None] * n_layers
    if window is None:
        if any(t in SLIDING_TYPES for t in types):
            raise InvalidInputError("this model has sliding-attention layers but no sliding_window in its config")
        return [None] * len(types)
    return [int(window) if t in SLIDING_TYPES else None for t in types]


def causal_mask(
    batch: int, n_queries: int, n_past: int, dtype: torch.dtype, device: torch.device
) -> Float[Tensor, "batch 1 query_pos key_pos"]:
    """0 where query ``n_past + i`` may see key ``j <= n_past + i``, ``finfo.min`` elsewhere (transformers's 4D float form)."""
    keys = torch.arange(n_past + n_queries, device=device)
    queries = torch.arange(n_past, n_past + n_queries, device=device)
    blocked = keys[None, :] > queries[:, None]
    mask = torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)
    return mask[None, None].expand(batch, 1, n_queries, n_past + n_queries)
