"""The ``hooked`` backend: TransformerLens's ``HookedTransformer`` and its subclasses (SAELens's ``HookedSAETransformer``).

Positions go through ``blocks.L.attn.hook_rot_q`` / ``hook_rot_k`` (:mod:`.positions`) or
``hook_pos_embed``; the KV cache is TransformerLens's own ``HookedTransformerKeyValueCache``. Every
forward passes an all-ones ``attention_mask``: TEMPO's masks (isolation, pruning, padding) go through
``hook_attn_scores``, so TransformerLens must neither guess padding from token ids nor shift positions.
On local (sliding-window) layers a TEMPO step uses a plain causal mask (:mod:`.windows`): the windows
come from TEMPO's mask hooks, by each row's physical distance.

May import: :mod:`..base` and the layers below the model layer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..base import Backend, Hook, PositionKind, SpeedRecord, eos_ids, fast_setting
from .from_folder import hooked_from_folder
from .positions import hooked_rope_hooks
from .weight_layout import restore_weight_layout, store_weights_as_read, weights_stored_as_read
from .windows import model_windows, without_own_windows

__all__ = ["HookedBackend", "hooked_from_folder", "is_hooked", "restore_weight_layout", "store_weights_as_read"]

log = logging.getLogger("tempo_lens")


def is_hooked(model: Any) -> bool:
    try:
        from transformer_lens import HookedTransformer  # deferred: transformer_lens
    except ImportError:  # TransformerLens 4 removed it
        return False
    return isinstance(model, HookedTransformer)


class _NormView(torch.nn.Module):
    """TransformerLens's final norm under the names the tools read (``weight``, ``bias``; TL calls them ``w``, ``b``)."""

    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.norm = norm
        w = getattr(norm, "w", None)  # a folded norm (LNPre / RMSPre: fold_ln=True) has no weight: it is 1
        cfg: Any = norm.cfg
        self.weight = w if w is not None else torch.ones(int(cfg.d_model), device=cfg.device)
        self.bias = getattr(norm, "b", None)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


def kv_cache_class() -> Any:
    """TransformerLens's KV cache for HookedTransformer, under its 3.x name or its older one."""
    try:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache  # deferred: transformer_lens
    except ImportError:
        from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache  # deferred: transformer_lens

        return HookedTransformerKeyValueCache
    return TransformerLensKeyValueCache


class HookedBackend(Backend):
    name = "hooked"

    def weights(self) -> Iterator[Tensor]:
        return self.model.parameters()

    def eos_token_ids(self) -> set[int]:
        return eos_ids(getattr(self.model, "tokenizer", None), getattr(self.model, "tempo_lens_eos_token_id", None))

    def attention_windows(self) -> list[int | None]:
        return model_windows(self.model)

    def physical_limit(self) -> int | None:
        # The learned table has n_ctx rows; TransformerLens grows a rotary table on demand, up to n_ctx rows.
        return int(self.model.cfg.n_ctx) if self.position_kind() is not None else None

    def position_kind(self) -> PositionKind | None:
        kind = self.model.cfg.positional_embedding_type
        if kind == "rotary" and "blocks.0.attn.hook_rot_q" in self.model.hook_dict:
            return "rotary"
        if kind == "standard" and "hook_pos_embed" in self.model.hook_dict:
            return "learned"
        return None

    def position_hook_names(self) -> list[str]:
        kind = self.position_kind()
        if kind == "rotary":
            return ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"]
        return ["hook_pos_embed"] if kind else []

    def rope_position_hooks(self, positions: Any) -> list[Hook]:
        return hooked_rope_hooks(self.model, positions)

    def position_table(self) -> Tensor:
        return self.model.pos_embed.W_pos

    def apply_speedups(self, fast: bool | None) -> list[str]:
        if fast_setting(fast) is not False:
            store_weights_as_read(self.model)
        n = weights_stored_as_read(self.model)
        return [f"weights stored as read ({n} modules: the forward copies no weight per call)"] if n else []

    def speed_record(self) -> SpeedRecord:
        return SpeedRecord(paths=["weights stored as read"] if weights_stored_as_read(self.model) else [])

    def new_cache(self, batch: int) -> Any:
        return kv_cache_class().init_cache(self.model.cfg, self.device, batch)

    def repeat_cache(self, cache: Any, batch: int) -> Any:
        repeated = self.new_cache(batch)
        for new, old in zip(repeated.entries, cache.entries, strict=True):
            new.past_keys = old.past_keys.repeat_interleave(batch, dim=0)
            new.past_values = old.past_values.repeat_interleave(batch, dim=0)
        repeated.previous_attention_mask = cache.previous_attention_mask.repeat_interleave(batch, dim=0)
        return repeated

    def forward(self, tokens: Tensor, cache: Any = None) -> Tensor:
        return self.model(tokens, past_kv_cache=cache, attention_mask=torch.ones_like(tokens))

    def forward_step(self, tokens: list[list[int]], cache: Any) -> Tensor:
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        with without_own_windows(self.model):
            return self.forward(ids, cache)

    def run_with_cache(self, tokens: Tensor, names_filter: Any) -> tuple[Tensor, Any]:
        return self.model.run_with_cache(tokens, names_filter=names_filter, attention_mask=torch.ones_like(tokens))

    def final_residual_hook(self) -> str:
        return f"blocks.{int(self.model.cfg.n_layers) - 1}.hook_resid_post"

    def final_norm(self) -> torch.nn.Module:
        return _NormView(self.model.ln_final)

    def unembed_logits(self, normed: Tensor) -> Tensor:
        return self.model.unembed(normed)
