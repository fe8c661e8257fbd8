"""The pieces of one TEMPO step: prompt ids, EOS ids, sibling selection and the next distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..backends import Backend, as_backend
from ..errors import InvalidInputError
from ..validation import check_token_ids

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from .config import GenerationConfig


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Token ids as text (``<id>`` per token for a model without a tokenizer)."""
    if tokenizer is None:
        return "".join(f"<{i}>" for i in ids)
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def eos_token_ids(model: TransformerBridge | Backend) -> set[int]:
    """EOS ids of the tokenizer and of the generation config (``model``: a model or its resolved backend)."""
    return as_backend(model).eos_token_ids()


def prompt_token_ids(model: TransformerBridge, prompt: str | Sequence[int] | Tensor, chat: bool = False) -> list[int]:
    """The ids fed to the model for a prompt (BOS included when the tokenizer adds one)."""
    if isinstance(prompt, Tensor):
        if prompt.is_floating_point() or prompt.is_complex() or prompt.dtype == torch.bool:
            raise InvalidInputError(f"a prompt tensor must hold integer token ids, got dtype {prompt.dtype}")
        if prompt.dim() > 2 or (prompt.dim() == 2 and prompt.shape[0] != 1):
            raise InvalidInputError(
                f"a prompt tensor is one sequence [pos] or [1, pos], got shape {tuple(prompt.shape)}; "
                "for many prompts use generate_batch"
            )
        prompt = prompt.flatten().tolist()
    if isinstance(prompt, (bytes, bytearray, memoryview)):  # a bytes-like is never read as token ids
        raise InvalidInputError(
            f"the prompt is {type(prompt).__name__}, not text: decode it first (UTF-8: prompt.decode('utf-8')), "
            "or pass token ids as a list of integers"
        )
    if isinstance(prompt, str):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"the prompt is not valid text ({exc.reason} at character {exc.start}); pass UTF-8 text"
            ) from None
        if not prompt.strip():
            raise InvalidInputError("the prompt is empty; pass some text (e.g. 'The cat sat on the') or token ids")
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise InvalidInputError("this model has no tokenizer; pass the prompt as token ids")
        if chat:
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInputError("chat=True needs a tokenizer with a chat template; this one has none")
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in tokenizer(prompt)["input_ids"]]
    try:
        items = list(prompt)
    except TypeError:
        items = None
    odd = [i for i in items or [] if isinstance(i, bool) or not hasattr(i, "__index__")]
    if items is None or odd:
        raise InvalidInputError(
            f"the prompt must be text or a flat sequence of integer token ids, got {type(prompt).__name__}"
            + (f" holding {odd[0]!r}" if odd else "")
        )
    ids = [int(i) for i in items]
    if not ids:
        raise InvalidInputError("the prompt is empty; pass some text or at least one token id")
    return check_token_ids(model, ids)


def float32_at_least(threshold: float) -> float:
    """The smallest float32 value >= ``threshold``: a float32 ``p`` is >= ``threshold`` exactly when it is >= this."""
    rounded = np.float32(threshold)
    if float(rounded) < threshold:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return float(rounded)


def select_siblings(probs: Float[Tensor, " d_vocab"], threshold: float, max_parallel: int) -> tuple[list[int], list[float], int]:
    """Tokens with probability >= threshold, highest first, capped; the top token if none clears it.

    Returns (ids, probs, how many cleared the threshold before the cap). A token is kept exactly when its
    recorded probability (each one is ``float(p)``, exact) is >= the float64 threshold: float32
    probabilities are compared with the smallest float32 at or above the threshold, which decides the
    same without a float64 copy of the vocabulary.
    """
    if probs.dtype == torch.float32:
        above = int(torch.count_nonzero(probs >= float32_at_least(threshold)))
    else:
        above = int(torch.count_nonzero(probs.to(torch.float64) >= threshold))
    k = min(max(above, 1), max_parallel)
    top = torch.topk(probs, k)
    return [int(i) for i in top.indices], [float(p) for p in top.values], above


def next_distribution(
    logits: Float[Tensor, "sibling d_vocab"], sibling_probs: Sequence[float], source: str
) -> Float[Tensor, " d_vocab"]:
    """The next step's distribution from the rows of the new siblings (mixture, top or last row).

    One row is its own mixture (weight 1 exactly), so it is returned as it is.
    """
    rows = torch.softmax(logits.float(), dim=-1)
    if source == "top" or len(rows) == 1:
        return rows[0]
    if source == "last":
        return rows[-1]
    weights = torch.tensor(sibling_probs, dtype=torch.float32, device=rows.device)
    weights = weights / weights.sum()
    return (weights[:, None] * rows).sum(0)


def step_widths(config: GenerationConfig) -> list[int]:
    """The most siblings each step can keep: ``max_parallel``, and at most ``1 / threshold`` (probabilities sum to 1)."""
    widths = []
    for step in range(config.max_steps):
        t = config.schedule.at(step, config.max_steps)
        most = config.max_parallel if t <= 0 else int(math.floor((1 + 1e-6) / t))  # 1e-6: float32 sums just above 1
        widths.append(max(1, min(config.max_parallel, most)))
    return widths


def check_context(backend: Backend, n_prompt: int, config: GenerationConfig) -> None:
    """Refuse before any model work when the logical or the physical positions could run past the model's limits.

    Logical: ``n_prompt + max_steps`` positions against the context ``n_ctx``. Physical: the worst case,
    every step keeping as many siblings as it can (:func:`step_widths`), against a physical limit (a
    learned position table, or a HookedTransformer's rotary table), which the model indexes at physical
    positions before any hook moves them. The run is refused up front rather than stopped part-way, so
    whether it runs never depends on what the model happens to select.
    """
    n_ctx, max_steps = int(backend.model.cfg.n_ctx), config.max_steps
    if n_prompt + max_steps > n_ctx:
        raise InvalidInputError(
            f"prompt ({n_prompt} tokens) + max_steps ({max_steps}) = {n_prompt + max_steps} logical positions exceeds "
            f"the model's context of {n_ctx}; shorten the prompt or lower max_steps"
        )
    limit = backend.physical_limit()
    worst = n_prompt + sum(step_widths(config))
    if limit is not None and worst > limit:
        raise InvalidInputError(
            f"prompt ({n_prompt} tokens) + up to {worst - n_prompt} siblings in {max_steps} steps (at most max_parallel "
            f"{config.max_parallel} per step, and no more than 1/threshold) = {worst} tokens in the worst case, past this "
            f"model's physical limit of {limit} positions (its position table; TEMPO appends every sibling physically); "
            f"lower max_parallel or max_steps, raise the threshold, or shorten the prompt"
        )
