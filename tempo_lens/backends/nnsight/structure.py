"""Where a Hugging Face causal LM keeps what TEMPO reads, found from its module tree and config.

Every family names its decoder layers, attention, final norm and unembedding differently (Llama,
Qwen and Gemma: ``model.layers[i].self_attn``, ``model.norm``; GPT-2: ``transformer.h[i].attn``,
``transformer.ln_f``). :func:`structure_of` finds them once, so the backend reads any causal LM the
same way; :class:`TLConfig` gives the TransformerLens-style facts (``n_layers``, ``n_heads``, ...) that
tempo_lens reads as ``model.cfg`` on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...errors import ModelUnavailableError
from ..base import PositionKind

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


@dataclass(frozen=True)
class ModelStructure:
    """Dotted paths (from the causal LM) of the parts TEMPO reads, and the attention layout of its layers."""

    layers: str
    attention: str
    mlp: str | None
    final_norm: str
    unembed: str
    position_kind: PositionKind | None
    layer_types: tuple[str, ...]
    sliding_window: int | None

    @property
    def has_sliding_layers(self) -> bool:
        return self.sliding_window is not None and "sliding_attention" in self.layer_types

    def attention_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}.{self.attention}"


@dataclass(frozen=True)
class TLConfig:
    """The TransformerLens-style facts of a Hugging Face model (``model.cfg`` on an nnsight model)."""

    model_name: str
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    dtype: torch.dtype
    positional_embedding_type: str


def text_config(hf: Any) -> Any:
    config = hf.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _child(module: torch.nn.Module, names: tuple[str, ...]) -> str | None:
    children = dict(module.named_children())
    return next((name for name in names if name in children), None)


def structure_of(hf: Any) -> ModelStructure:
    """The parts of causal LM ``hf``; a model without decoder layers of attention modules is refused."""
    config = text_config(hf)
    n_layers = int(config.num_hidden_layers)
    modules = dict(hf.named_modules())
    layers = next(
        (name for name, m in modules.items() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers and name), None
    )
    attention = _child(modules[layers][0], ATTENTION_NAMES) if layers else None
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    unembed = next((name for name, m in modules.items() if m is head), None)
    base_path = layers.rsplit(".", 1)[0] if layers and "." in layers else ""
    base = modules.get(base_path)
    norm = _child(base, NORM_NAMES) if base is not None else None
    if not (layers and attention and unembed and norm):
        found = {"decoder layers": layers, "attention modules": attention, "an unembedding": unembed, "a final norm": norm}
        missing = next(what for what, path in found.items() if not path)
        raise ModelUnavailableError(
            f"the nnsight backend cannot find {missing} in {type(hf).__name__}; it serves Hugging Face causal LMs "
            "(Llama, Qwen, Mistral, Gemma, GPT-2 families)"
        )
    base_children = dict(base.named_children()) if base is not None else {}
    rotary = any("rotary" in name for name in modules)
    position_kind: PositionKind | None = "learned" if "wpe" in base_children else "rotary" if rotary else None
    layer_types = tuple(getattr(config, "layer_types", None) or ["full_attention"] * n_layers)
    window = getattr(config, "sliding_window", None)
    return ModelStructure(
        layers=layers,
        attention=attention,
        mlp=_child(modules[layers][0], MLP_NAMES),
        final_norm=f"{base_path}.{norm}",
        unembed=unembed,
        position_kind=position_kind,
        layer_types=layer_types,
        sliding_window=int(window) if window and "sliding_attention" in layer_types else None,
    )


def tl_config(hf: Any, name: str) -> TLConfig:
    config = text_config(hf)
    n_heads = int(config.num_attention_heads)
    d_model = int(config.hidden_size)
    n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
    kind = structure_of(hf).position_kind
    return TLConfig(
        model_name=name,
        n_layers=int(config.num_hidden_layers),
        n_heads=n_heads,
        n_key_value_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        d_model=d_model,
        d_head=int(getattr(config, "head_dim", None) or d_model // n_heads),
        d_vocab=int(config.vocab_size),
        n_ctx=int(n_ctx),
        dtype=next(hf.parameters()).dtype,
        positional_embedding_type="rotary" if kind == "rotary" else "standard",
    )


def resolve(root: Any, path: str) -> Any:
    """The attribute at dotted ``path`` under ``root`` (integers index module lists)."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root
