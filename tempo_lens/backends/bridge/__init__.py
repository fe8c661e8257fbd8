"""The ``bridge`` backend: TransformerLens's ``TransformerBridge`` around a Hugging Face model.

Positions go through ``rotary_emb.hook_cos`` / ``hook_sin`` (:mod:`.positions`) or ``hook_pos_embed``;
the KV cache is the wrapped model's own (a transformers ``DynamicCache``), passed under the keyword
its forward takes (:mod:`.kv_cache`, which also lets TransformerLens 4.x read it). The exact speed paths
(:mod:`.fast_paths`) apply to bridges only. On a model with sliding windows the cache keeps every key on
every layer and a TEMPO step passes a plain causal 4D mask, which transformers uses as it is on every
layer: the windows come from TEMPO's mask hooks (:mod:`.windows`).

May import: :mod:`..base` and the layers below the model layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ..base import Backend, Hook, PositionKind, SpeedRecord, eos_ids
from ..observed import has_hooks
from .fast_paths import apply_fast_paths, speed_record
from .kv_cache import cache_kwarg_name, ensure_kv_cache, repeat_dynamic_cache
from .positions import bridge_rope_hooks
from .windows import causal_mask, config_windows


def is_bridge(model: Any) -> bool:
    try:
        from transformer_lens.model_bridge import TransformerBridge  # deferred: transformer_lens
    except ImportError:  # a TransformerLens without the bridge
        return False
    return isinstance(model, TransformerBridge)


class BridgeBackend(Backend):
    name = "bridge"

    def weights(self) -> Iterator[Tensor]:
        return self.model.original_model.parameters()

    def eos_token_ids(self) -> set[int]:
        config = getattr(self.model.original_model, "generation_config", None)
        return eos_ids(getattr(self.model, "tokenizer", None), getattr(config, "eos_token_id", None))

    def attention_windows(self) -> list[int | None]:
        return config_windows(self.model.original_model.config, int(self.model.cfg.n_layers))

    def physical_limit(self) -> int | None:
        return int(self.position_table().shape[0]) if self.position_kind() == "learned" else None

    def position_kind(self) -> PositionKind | None:
        hooks = self.model.hook_dict
        if "rotary_emb.hook_cos" in hooks and hasattr(self.model, "rotary_emb"):
            return "rotary"
        if "hook_pos_embed" in hooks and hasattr(self.model, "pos_embed"):
            return "learned"
        return None

    def position_hook_names(self) -> list[str]:
        kind = self.position_kind()
        return ["rotary_emb.hook_cos", "rotary_emb.hook_sin"] if kind == "rotary" else ["hook_pos_embed"] if kind else []

    def rope_position_hooks(self, positions: Any) -> list[Hook]:
        return bridge_rope_hooks(self.model, positions)

    def position_table(self) -> Tensor:
        return self.model.pos_embed.original_component.weight

    def prepare(self) -> None:
        ensure_kv_cache(self.model)

    def apply_speedups(self, fast: bool | None) -> list[str]:
        return apply_fast_paths(self.model, fast)

    def speed_record(self) -> SpeedRecord:
        return speed_record(self.model)

    def new_cache(self, batch: int) -> Any:
        from transformers import DynamicCache  # deferred: transformers

        if any(w is not None for w in self.attention_windows()):
            return DynamicCache()  # every key on every layer: TEMPO's hooks apply the windows
        return DynamicCache(config=self.model.original_model.config)

    def repeat_cache(self, cache: Any, batch: int) -> Any:
        return repeat_dynamic_cache(cache, batch)

    def forward_step(self, tokens: list[list[int]], cache: Any, **extra: Any) -> Tensor:
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        kwargs = dict(extra)
        if cache is not None:
            kwargs.update({cache_kwarg_name(self.model.original_model): cache, "use_cache": True})
        if any(w is not None for w in self.attention_windows()):
            past = 0 if cache is None else cache.get_seq_length()
            kwargs["attention_mask"] = causal_mask(ids.shape[0], ids.shape[1], past, self.dtype, self.device)
        return self.model(ids, **kwargs)

    def forward_read(self, tokens: list[list[int]], cache: Any, read: Sequence[int]) -> Tensor:
        if any(has_hooks(module) for module in self.model.unembed.modules()):
            return super().forward_read(tokens, cache, read)  # a hook on the unembedding sees every column, as always
        return self.forward_step(tokens, cache, logits_to_keep=torch.tensor(list(read), device=self.device))

    def forward(self, tokens: Tensor, cache: Any = None) -> Tensor:
        if cache is None:
            return self.model(tokens)
        return self.model(tokens, **{cache_kwarg_name(self.model.original_model): cache, "use_cache": True})

    def run_with_cache(self, tokens: Tensor, names_filter: Any) -> tuple[Tensor, Any]:
        return self.model.run_with_cache(tokens, names_filter=names_filter)

    def final_residual_hook(self) -> str:
        return "ln_final.hook_in"

    def final_norm(self) -> torch.nn.Module:
        return self.model.ln_final.original_component

    def unembed_logits(self, normed: Tensor) -> Tensor:
        return self.model.unembed.original_component(normed)
