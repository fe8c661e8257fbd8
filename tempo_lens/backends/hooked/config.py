"""A ``HookedTransformerConfig`` built offline from a model folder's own ``config.json``.

TransformerLens's ``from_pretrained`` resolves an official hub name and may fetch its config; here the
config comes from the folder that holds the weights. Most architectures go through TransformerLens's
own converter (fed a copy of ``config.json`` in a neutral folder, since it picks some architectures by
words in the path); Gemma 3 text models, which it knows only by hub name, and GPT-2, whose converter
reads a field transformers 5 no longer has, are converted here from the same fields.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ...errors import ModelUnavailableError

N_CTX_CAP = 8192  # TransformerLens's own default for long-context models: rotary tables grow up to n_ctx on demand


def _gemma3(hf: Any) -> dict[str, Any]:
    rope = hf.rope_parameters or {}
    full, sliding = rope.get("full_attention", {}), rope.get("sliding_attention", {})
    if any(part.get("rope_type", "default") != "default" for part in (full, sliding)):
        raise ModelUnavailableError(
            "this Gemma 3 model scales its rotary embedding; the hooked backend serves the default "
            "rotary only, use backend='bridge'"
        )
    if getattr(hf, "query_pre_attn_scalar", hf.head_dim) != hf.head_dim:
        raise ModelUnavailableError(
            "this Gemma 3 model scales attention by query_pre_attn_scalar != head_dim; use backend='bridge'"
        )
    return {
        "d_model": hf.hidden_size,
        "d_head": hf.head_dim,
        "n_heads": hf.num_attention_heads,
        "d_mlp": hf.intermediate_size,
        "n_layers": hf.num_hidden_layers,
        "n_ctx": hf.max_position_embeddings,
        "eps": hf.rms_norm_eps,
        "d_vocab": hf.vocab_size,
        "act_fn": hf.hidden_activation,
        "initializer_range": hf.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": full.get("rope_theta", 1e6),
        "rotary_base_local": sliding.get("rope_theta", 1e4),
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "n_key_value_heads": hf.num_key_value_heads,
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
        "use_qk_norm": True,
        "window_size": hf.sliding_window,
        "use_local_attn": True,
        "attn_types": ["local" if t == "sliding_attention" else "global" for t in hf.layer_types],
        "original_architecture": "Gemma3ForCausalLM",
    }


def _gpt2(hf: Any) -> dict[str, Any]:
    return {
        "d_model": hf.n_embd,
        "d_head": hf.n_embd // hf.n_head,
        "n_heads": hf.n_head,
        "d_mlp": hf.n_inner or 4 * hf.n_embd,
        "n_layers": hf.n_layer,
        "n_ctx": hf.n_positions,
        "eps": hf.layer_norm_epsilon,
        "d_vocab": hf.vocab_size,
        "act_fn": hf.activation_function,
        "use_attn_scale": hf.scale_attn_weights,
        "use_local_attn": False,
        "scale_attn_by_inverse_layer_idx": hf.scale_attn_by_inverse_layer_idx,
        "normalization_type": "LN",
        "original_architecture": "GPT2LMHeadModel",
    }


_OWN = {"Gemma3ForCausalLM": _gemma3, "GPT2LMHeadModel": _gpt2}


def _converted(folder: Path) -> dict[str, Any]:
    import transformer_lens.loading_from_pretrained as loading  # deferred: transformer_lens

    with tempfile.TemporaryDirectory(prefix="tempo-lens-config-") as neutral:
        shutil.copyfile(folder / "config.json", Path(neutral) / "config.json")
        try:
            return loading.convert_hf_model_config(neutral)
        except NotImplementedError as exc:
            raise ModelUnavailableError(f"HookedTransformer cannot serve this model: {exc}; use backend='bridge'") from None


def hooked_config(folder: Path, hf_config: Any, name: str, dtype: torch.dtype, device: str) -> Any:
    """The ``HookedTransformerConfig`` of the model in ``folder`` (weights kept as they are: nothing folded)."""
    from transformer_lens import HookedTransformerConfig  # deferred: transformer_lens

    architecture = (getattr(hf_config, "architectures", None) or [""])[0]
    cfg = _OWN[architecture](hf_config) if architecture in _OWN else _converted(folder)
    cfg.update(
        model_name=Path(name).name or name,
        tokenizer_name=str(folder),
        init_weights=False,
        device=device,
        dtype=dtype,
        n_devices=1,
        from_checkpoint=False,
        default_prepend_bos=cfg.get("default_prepend_bos", True),
        d_vocab=hf_config.vocab_size,
        n_ctx=min(int(cfg["n_ctx"]), N_CTX_CAP),
    )
    return HookedTransformerConfig.from_dict(cfg)
