"""Shared RoPE positions on a HookedTransformer, through ``hook_rot_q`` / ``hook_rot_k`` of every layer.

A HookedTransformer rotates queries and keys inside each attention layer with that layer's tables
(``attn.rotary_cos`` / ``rotary_sin``, ``[n_ctx, rotary_dim]``; Gemma 3's local layers use
``rotary_base_local``). Keys are cached un-rotated and the whole key sequence is rotated again on every
forward, at rows ``0..K-1``; the ``q`` queries at rows ``K-q..K-1``. The hooks receive those rotated
vectors and turn each by the difference between its wanted angle and the angle it was given:
``R(wanted - physical) = R(wanted) R(physical)^-1``, built from the layer's own table rows, so a token
whose wanted position is its physical one keeps TransformerLens's own bits. Only the first
``rotary_dim`` features turn, in the layer's pairing (``rotary_adjacent_pairs``: GPT-J style; else
GPT-NeoX halves). Fractional positions use the layer's frequencies (read from its own table
computation at float64) at the wanted positions.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InvalidInputError
from ...hook_cache import HookCache
from ...position_source import PositionSource, last_positions, positions_of
from ..base import Hook


def _inverse_frequencies(attn: Any) -> tuple[Float[Tensor, " rotary_dim"], float]:
    """The layer's angle per unit position for every rotary feature, and its table's amplitude (yarn scaling)."""
    sin, cos = attn.calculate_sin_cos_rotary(attn.cfg.rotary_dim, 2, base=attn._rotary_base(), dtype=torch.float64)
    return torch.atan2(sin[1], cos[1]), float(torch.hypot(sin[1, 0], cos[1, 0]))


def _tables_at(attn: Any, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` rows of ``attn``'s rotary table at ``positions`` (``[..., rotary_dim]``), fractional allowed."""
    if torch.equal(positions, positions.round()) and bool((positions >= 0).all()):
        rows = positions.long()
        if int(rows.max()) >= attn.rotary_cos.shape[0]:
            attn._extend_rotary_embeddings(int(rows.max()) + 1)
        rows = rows.to(attn.rotary_cos.device)
        return attn.rotary_cos[rows], attn.rotary_sin[rows]
    inv_freq, amplitude = _inverse_frequencies(attn)
    angles = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device)
    return (amplitude * angles.cos()).to(dtype), (amplitude * angles.sin()).to(dtype)


def turn_tables(attn: Any, physical: Tensor, wanted: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``cos`` / ``sin`` of (wanted - physical) angles, ``[batch or 1, pos, 1, rotary_dim]``, from the layer's own tables."""
    cos_p, sin_p = _tables_at(attn, physical, dtype)
    cos_w, sin_w = _tables_at(attn, wanted.to(physical.device), dtype)
    norm = cos_p * cos_p + sin_p * sin_p  # the table's squared amplitude (1 but for yarn's attention factor)
    cos_d = (cos_w * cos_p + sin_w * sin_p) / norm
    sin_d = (sin_w * cos_p - cos_w * sin_p) / norm
    if cos_d.ndim == 2:  # one row of positions for every batch row
        cos_d, sin_d = cos_d[None], sin_d[None]
    return cos_d[:, :, None, :], sin_d[:, :, None, :]


def _turn(attn: Any, x: Float[Tensor, "batch pos head d_head"], tables: tuple[Tensor, Tensor]) -> Tensor:
    """``x`` turned by the angles of ``tables`` (:func:`turn_tables`) on its first ``rotary_dim`` features."""
    rotary_dim = attn.cfg.rotary_dim
    cos_d, sin_d = tables[0].to(x.device), tables[1].to(x.device)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    turned = x_rot * cos_d + attn.rotate_every_two(x_rot) * sin_d
    return torch.cat([turned, x_pass], dim=-1)


def hooked_rope_hooks(model: Any, positions: PositionSource) -> list[Hook]:
    """``blocks.L.attn.hook_rot_q`` / ``hook_rot_k`` hooks that move every token to its position in ``positions``.

    The forward covers the last tokens of the sequence ``positions`` describes, and starts at its first
    token or continues a KV cache that holds the earlier ones (as generation does): the keys then number
    exactly as many as the positions.
    """
    n_layers = int(model.cfg.n_layers)
    # layers with one rotary base share one table per forward: queries and keys, per rotary base (two on Gemma 3)
    cache: HookCache[tuple, tuple[Tensor, Tensor]] = HookCache(size=8)

    def make(layer: int, which: str) -> Any:
        attn = model.blocks[layer].attn

        def hook_rot(x: Float[Tensor, "batch pos head_index d_head"], hook: Any = None) -> Tensor:
            get_positions, source_key = positions_of(positions)
            all_positions = get_positions()
            n_all, n = all_positions.shape[-1], x.shape[1]
            if which == "k" and n != n_all:
                raise InvalidInputError(
                    f"the forward has {n} keys but the positions describe {n_all} tokens; on a HookedTransformer a forward "
                    "must start at the sequence's first token or continue a KV cache holding the earlier tokens"
                )
            key = (source_key, n_all, n, attn._rotary_base(), getattr(attn, "attn_type", None), attn.rotary_cos.shape[0], x.dtype)

            def tables() -> tuple[Tensor, Tensor]:
                physical = torch.arange(n_all - n, n_all, dtype=torch.float32)
                return turn_tables(attn, physical, last_positions(all_positions, n).to(torch.float32), x.dtype)

            return _turn(attn, x, cache.get(key, tables))

        return hook_rot

    return [(f"blocks.{layer}.attn.hook_rot_{which}", make(layer, which)) for layer in range(n_layers) for which in ("q", "k")]
