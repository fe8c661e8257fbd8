"""A minimal shim for a TransformerBridge / transformers version mismatch.

transformers >= 5.2x passes the KV cache to attention modules as ``cache=``; TransformerLens
4.3.0's attention bridges read ``past_key_values=`` only, so a cached decode silently attends to the
new tokens alone (wrong logits, no error). :func:`patch_bridge_kv_cache` makes the bridge read
either name. It is idempotent and changes nothing when the cache already arrives as
``past_key_values``. ``tests/test_model.py`` compares cached decoding with a full recompute, so an
upgrade that breaks (or fixes) this is caught.
"""

from __future__ import annotations

import inspect
from typing import Any

_PATCHED_FLAG = "_tempo_lens_reads_cache_kwarg"


def patch_bridge_kv_cache() -> bool:
    """Let TransformerBridge attention read the KV cache under ``cache=`` too. Returns True once patched."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    original = AttentionBridge._update_kv_cache
    if getattr(original, _PATCHED_FLAG, False):
        return True

    def _update_kv_cache(self, k, v, **kwargs: Any):
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(self, k, v, **kwargs)

    setattr(_update_kv_cache, _PATCHED_FLAG, True)
    _update_kv_cache.__doc__ = original.__doc__
    AttentionBridge._update_kv_cache = _update_kv_cache  # type: ignore[method-assign]
    return True


def cache_kwarg_name(hf_model: Any) -> str:
    """The keyword under which this Hugging Face model's forward takes its KV cache."""
    params = inspect.signature(hf_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
