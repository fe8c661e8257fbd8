"""A TEMPO step's 4D float masks for a Hugging Face model, one per attention type.

The layout decides what each query may see (causality, isolation, pruning, other rows of a lane):
``TempoStep.blocked``. HF eager attention adds a float mask to its scores, so a hidden pair gets
``finfo(dtype).min`` (never a boolean mask: eager attention would ignore it) and a visible one 0; every
query keeps its own key, so no row is empty. Sliding-window layers (Gemma 3) get the layout's mask
for their window (``TempoStep.windowed``: keys ``window`` or more physical positions back are hidden
too); the HF cache keeps every key on every layer (a ``DynamicCache`` built without a config), so the
window lives in the mask alone.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..base import TempoStep

FULL, SLIDING = "full_attention", "sliding_attention"


def keep_own_key(blocked: Bool[Tensor, "batch query_pos key_pos"]) -> Bool[Tensor, "batch query_pos key_pos"]:
    """``blocked`` with each query's own key (the last ``q`` columns' diagonal) visible."""
    q, k = blocked.shape[-2], blocked.shape[-1]
    fixed = blocked.clone()
    fixed[:, torch.arange(q), torch.arange(k - q, k)] = False
    return fixed


def float_masks(
    step: TempoStep, window: int | None, dtype: torch.dtype, device: torch.device
) -> dict[str, Float[Tensor, "batch 1 query_pos key_pos"]]:
    """``{"full_attention": m}``, plus ``"sliding_attention"`` when ``window`` is given; 0 visible, ``finfo.min`` hidden."""
    hidden = torch.finfo(dtype).min

    def as_float(blocked: Tensor) -> Tensor:
        mask = torch.zeros(blocked.shape, dtype=dtype).masked_fill_(keep_own_key(blocked), hidden)
        return mask[:, None].to(device)

    masks = {FULL: as_float(step.blocked)}
    if window is not None:
        masks[SLIDING] = as_float(step.windowed[window])
    return masks
