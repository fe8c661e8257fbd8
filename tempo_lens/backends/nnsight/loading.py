"""Booting an ``nnsight.LanguageModel`` (eager attention, eval mode) from a folder or Hugging Face name."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ...errors import ModelUnavailableError


def bos_tokenizer(path: str) -> Any:
    """The model's tokenizer, set to prepend BOS when it has one (as TransformerLens's), so every backend feeds the same ids."""
    from transformers import AutoTokenizer  # deferred: transformers

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.bos_token is None or getattr(tokenizer, "add_bos_token", False):
        return tokenizer
    try:
        return AutoTokenizer.from_pretrained(path, add_bos_token=True)
    except ValueError:  # a BOS the post-processor cannot express: such a tokenizer never prepends it
        return tokenizer


def load_nnsight(path: str, name: str, dtype: torch.dtype, device: str | None, device_map: Any) -> Any:
    """``LanguageModel(path)`` with its weights loaded on ``device`` (or spread by ``device_map``, e.g. ``"auto"``)."""
    try:
        from nnsight import LanguageModel  # optional dependency: pip install 'tempo_lens[nnsight]'
    except ImportError:
        raise ModelUnavailableError(
            "backend='nnsight' needs nnsight; install it with pip install 'tempo_lens[nnsight]'"
        ) from None
    placement = device_map if device_map is not None else {"": device or "cpu"}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LanguageModel is deprecated")  # the class the issue names; same model
            model = LanguageModel(
                path, tokenizer=bos_tokenizer(path), attn_implementation="eager", dtype=dtype, device_map=placement, dispatch=True
            )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(f"Could not load model {name!r} with nnsight: {first[:400]}") from exc
    model._module.eval()
    return model
