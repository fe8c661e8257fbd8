"""A minimal, per-model shim for a TransformerBridge / transformers version mismatch.

transformers >= 5.2x passes the KV cache to attention modules as ``cache=``; TransformerLens
4.3.0's attention bridges read ``past_key_values=`` only, so a cached decode silently attends to the
new tokens alone (wrong logits, no error). :func:`ensure_kv_cache` lets the attention bridges of
*one model instance* read either name: it wraps each instance's ``_update_kv_cache`` and leaves the
TransformerLens classes (and every other model in the process) untouched. It is idempotent and
changes nothing when the cache already arrives as ``past_key_values``. ``tests/models/test_loading.py``
compares cached decoding with a full recompute, so an upgrade that breaks (or fixes) this is caught.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger("tempo_lens")
_SHIMMED = "_tempo_lens_reads_cache_kwarg"


def ensure_kv_cache(model: TransformerBridge) -> int:
    """Let this model's attention bridges read the KV cache under ``cache=`` too; returns how many were wrapped now."""
    wrapped = 0
    for module in model.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or module.__dict__.get(_SHIMMED):
            continue

        def _update_kv_cache(k, v, _original=update, **kwargs: Any):
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return _original(k, v, **kwargs)

        module.__dict__["_update_kv_cache"] = _update_kv_cache
        module.__dict__[_SHIMMED] = True
        wrapped += 1
    if wrapped:
        log.debug("KV-cache shim: %d attention bridges of this model read cache= as past_key_values", wrapped)
    return wrapped


def cache_kwarg_name(hf_model: TransformerBridge) -> str:
    """The keyword under which this Hugging Face model's forward takes its KV cache."""
    params = inspect.signature(hf_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def repeat_dynamic_cache(cache: Any, batch: int) -> Any:
    """A deep copy of a one-row Hugging Face cache with its row repeated ``batch`` times (``cache`` is left as it is)."""
    repeated = copy.deepcopy(cache)
    repeated.batch_repeat_interleave(batch)
    return repeated
