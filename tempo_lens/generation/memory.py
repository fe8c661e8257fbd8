"""Memory a generation will need, estimated before any model work, and the batch size that fits.

The estimate counts what grows with the settings: the KV cache (every layer keeps a key and a value
per token), one forward's attention scores and pattern for the widest step, and its logits rows. Weights
are already loaded and not counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..backends import Backend
from ..errors import InvalidInputError
from ..io.memory import available_bytes

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MAX_AUTO_BATCH = 16


def generation_bytes(model: TransformerBridge, n_prompt: int, max_steps: int, max_parallel: int, batch: int = 1) -> int:
    """Upper estimate of the memory a TEMPO generation of ``batch`` rows needs beyond the weights."""
    cfg = model.cfg
    dtype_bytes = torch.finfo(cfg.dtype).bits // 8 if getattr(cfg, "dtype", None) is not None else 4
    n_heads, n_layers = int(cfg.n_heads), int(cfg.n_layers)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    d_head = int(getattr(cfg, "d_head", None) or cfg.d_model // n_heads)
    width = min(max_parallel, int(cfg.d_vocab))  # a step cannot hold more siblings than the vocabulary
    n_tokens = n_prompt + max_steps * width
    widest = max(n_prompt, width)
    kv_cache = 2 * n_layers * n_kv * d_head * n_tokens * dtype_bytes
    scores = 3 * n_heads * widest * n_tokens * 4  # scores, mask and pattern of one layer at a time
    logits = 2 * widest * int(cfg.d_vocab) * 4
    return batch * (kv_cache + scores + logits)


def check_fits(backend: Backend, n_prompt: int, max_steps: int, max_parallel: int, batch: int = 1) -> None:
    """Refuse settings whose estimated memory exceeds what is free, naming the settings to lower."""
    need, free = generation_bytes(backend.model, n_prompt, max_steps, max_parallel, batch), available_bytes(backend.device)
    if need > free:
        raise InvalidInputError(
            f"this generation would need about {need / 2**30:.1f} GiB (max_parallel {max_parallel} x max_steps "
            f"{max_steps}{f' x batch {batch}' if batch > 1 else ''}) but {free / 2**30:.1f} GiB is free; "
            "lower max_parallel, max_steps or the batch size (the estimate assumes every step keeps max_parallel "
            "siblings, so the threshold does not change it)"
        )


def default_batch_size(backend: Backend, n_prompt: int, max_steps: int, max_parallel: int) -> int:
    """The largest batch up to 16 whose estimate fits in a quarter of the free memory (at least 1)."""
    per_row = max(1, generation_bytes(backend.model, n_prompt, max_steps, max_parallel))
    return int(max(1, min(MAX_AUTO_BATCH, available_bytes(backend.device) // 4 // per_row)))
