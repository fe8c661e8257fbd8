"""Batched TEMPO: many prompts through one forward per step, each row exactly as ``generate`` makes it.

Rows differ in prompt length, in how many siblings each step keeps and in when they stop, so every
forward feeds ``q`` = the widest row's new tokens, and narrower rows are left-padded (their real tokens
are the last ones of the block). A :class:`PaddedBatch` maps each row's physical tokens to batch
columns; from it come, per row, the positions (``[batch, K]``, padding at 0) for the rotary hooks and
the mask (``[batch, q, K]``: a row's own layout mask on its columns, every padding column hidden) for
the attention-score hooks. Padding is never attended, never selected and shifts no logical position;
a finished row feeds only padding. Each row's patterns are cut back to its own columns before capture
and pruning see them, so they have the shapes a lone generation records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..compat import ensure_kv_cache
from ..errors import InvalidInputError
from ..hooks import PatternRecorder, attention_block_hooks, tempo_position_hooks
from .config import GenerationConfig
from .single import forward_step, new_cache
from .memory import check_fits, default_batch_size
from .result import GenerationResult
from .row import GenerationRow, resolve_config

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class PaddedBatch:
    """Which batch column holds each physical token of each row, and the per-row positions and masks."""

    rows: list[GenerationRow]
    pad_id: int = 0
    columns: list[list[int]] = field(default_factory=list)
    n_columns: int = 0
    positions: Float[Tensor, "batch key_pos"] | None = None
    mask: Bool[Tensor, "batch query_pos key_pos"] | None = None

    def __post_init__(self) -> None:
        self.columns = [[] for _ in self.rows]

    def feed(self, new_tokens: Sequence[Sequence[int]]) -> list[list[int]]:
        """Place each row's new tokens (already in its layout) right-aligned in a block of ``q`` columns.

        Returns the padded token rows for the forward and rebuilds positions and mask for it.
        """
        q = max(len(t) for t in new_tokens)
        start = self.n_columns
        self.n_columns += q
        padded = []
        for cols, tokens in zip(self.columns, new_tokens):
            cols.extend(range(start + q - len(tokens), start + q))
            padded.append([self.pad_id] * (q - len(tokens)) + [int(t) for t in tokens])
        self._build(q, [len(t) for t in new_tokens])
        return padded

    def _build(self, q: int, n_new: list[int]) -> None:
        batch, k = len(self.rows), self.n_columns
        positions = torch.zeros(batch, k)
        mask = torch.ones(batch, q, k, dtype=torch.bool)
        for i, (row, cols) in enumerate(zip(self.rows, self.columns)):
            index = torch.tensor(cols, dtype=torch.long)
            positions[i, index] = row.layout.positions("shared")
            if n_new[i]:
                own = row.layout.blocked(row.config.mode, n_queries=n_new[i], n_keys=len(row.layout))
                mask[i, q - n_new[i] :, index] = own
        self.positions, self.mask = positions, mask

    def row_patterns(self, patterns: dict[int, Tensor], i: int, n_new: int) -> dict[int, Tensor]:
        """Row ``i``'s patterns on its own queries and key columns: ``[1, head, n_new, K_row]``."""
        index = torch.tensor(self.columns[i], dtype=torch.long)
        out = {}
        for layer, pattern in patterns.items():
            rows = pattern[i : i + 1, :, pattern.shape[2] - n_new :]
            out[layer] = rows.index_select(-1, index.to(rows.device))
        return out

    def hooks(self, model: "TransformerBridge") -> list:
        blocked = lambda q, k: self.mask  # noqa: E731 - one mask object per forward, shared by all layers
        return tempo_position_hooks(model, lambda: self.positions) + attention_block_hooks(model, blocked)


def _pad_id(model: "TransformerBridge") -> int:
    """A token id to fill padding with (never attended): the tokenizer's pad or EOS id when it is in the vocabulary."""
    tokenizer = getattr(model, "tokenizer", None)
    vocab = int(model.cfg.d_vocab)
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and 0 <= value < vocab:
            return value
    return 0


def _run_rows(model: "TransformerBridge", rows: list[GenerationRow]) -> None:
    """Drive ``rows`` to their end through one forward per step."""
    batch = PaddedBatch(rows, pad_id=_pad_id(model))
    layers = set().union(*(row.recorded_layers for row in rows))
    with PatternRecorder(layers) as recorder, torch.no_grad():
        hooks = batch.hooks(model) + recorder.hooks() + [h for row in rows for h in row.hooks]
        with model.hooks(fwd_hooks=hooks):
            cache = new_cache(model)
            logits = forward_step(model, batch.feed([row.ids for row in rows]), cache)
            recorder.take()
            for i, row in enumerate(rows):
                row.read_prompt(logits[i])
            while not all(row.done for row in rows):
                new = [[] if row.done else row.choose() for row in rows]
                logits = forward_step(model, batch.feed(new), cache)
                patterns = recorder.take()
                for i, (row, ids) in enumerate(zip(rows, new)):
                    if ids:
                        row.read_step(logits[i, logits.shape[1] - len(ids) :], batch.row_patterns(patterns, i, len(ids)))


def generate_batch(
    model: "TransformerBridge",
    prompts: Sequence[str | Sequence[int]],
    config: GenerationConfig | None = None,
    *,
    batch_size: int | None = None,
    keep_logits: bool = False,
    **overrides: Any,
) -> list[GenerationResult]:
    """:func:`~tempo_lens.generation.generate` for many prompts, ``batch_size`` rows per forward.

    Takes the settings of ``generate`` (a :class:`GenerationConfig` and/or keyword overrides) and returns
    one result per prompt, in order, each what ``generate`` returns for that prompt (captures and
    pruning included). ``batch_size`` defaults to what the free memory allows, up to 16. Every prompt
    is checked before any model work.
    """
    config = resolve_config(config, overrides)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise InvalidInputError("prompts must be a non-empty list of prompts (text or token ids); for one prompt use generate()")
    checked = [GenerationRow.start(model, p, config) for p in prompts]  # tokenise and check all first
    longest = max(len(row.ids) for row in checked)
    if batch_size is None:
        batch_size = default_batch_size(model, longest, config.max_steps, config.max_parallel)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_fits(model, longest, config.max_steps, config.max_parallel, min(batch_size, len(prompts)))
    ensure_kv_cache(model)
    results: list[GenerationResult] = []
    for first in range(0, len(prompts), batch_size):
        chunk = prompts[first : first + batch_size]
        rows = [GenerationRow.start(model, p, config, row=i, keep_logits=keep_logits) for i, p in enumerate(chunk)]
        for row in rows:
            row.warn_stacklevel = 4  # choose → _run_rows → generate_batch → caller
        _run_rows(model, rows)
        results.extend(row.result() for row in rows)
    return results
