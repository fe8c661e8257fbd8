"""Booting a ``TransformerBridge`` (eager attention, eval mode, a KV cache that works) from a folder or name."""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ModelUnavailableError, describe
from .kv_cache import ensure_kv_cache


def load_bridge(path: str, name: str, dtype: torch.dtype, device: str | None, device_map: Any) -> Any:
    from transformer_lens.model_bridge import TransformerBridge  # deferred: transformer_lens

    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    else:
        kwargs["device"] = device
    try:
        bridge = TransformerBridge.boot_transformers(path, **kwargs)
    except ModelUnavailableError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:  # damaged files, shape mismatches
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "mismatched_sizes" in first or "size mismatch" in first:
            first = "config.json does not match the shapes of the weights (a damaged or foreign config.json)"
        raise ModelUnavailableError(
            f"Could not load model {name!r}: {first[:400]}. Check the name or folder (config.json and weights must "
            "agree); offline, pass a zoo name, a local directory or a model already in the Hugging Face cache."
        ) from exc
    except Exception as exc:  # e.g. safetensors' SafetensorError, which derives from Exception only
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ModelUnavailableError(f"Could not load model {name!r}: its weights are unreadable ({describe(exc)}).") from exc
    bridge.eval()
    ensure_kv_cache(bridge)
    return bridge
