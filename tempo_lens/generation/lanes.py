"""Lanes: where each row of a batched TEMPO forward lives, and the positions and masks of each forward.

Each row lives in a *lane* (a batch index of the forward); several short rows may share one lane, their
tokens side by side, which saves the padding a lane per row would need. Every forward feeds ``q`` = the
widest lane's new tokens; narrower lanes are left-padded. A :class:`LaneBatch` maps each row's physical
tokens to lane columns; from it come, per lane, the positions (``[batch, K]``, padding at 0) and the masks
(``[batch, q, K]``: each row's own layout mask on its queries and columns, every other column hidden; one
per sliding window the model has, each row's window counted in its own physical positions). Both
generators use it: the hook-driven one (:mod:`.batch`) and the one for backends without hook points
(:mod:`.explicit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..backends import Backend
from ..hook_context import StepContext, row_in_forward, step_context
from ..hooks import tempo_position_hooks, windowed_block_hooks
from .row import GenerationRow
from .steps import step_widths

LANE_KEYS = 512  # rows share a lane while their longest possible layouts fit in this many key columns


def assign_lanes(lengths: Sequence[int], share: bool, lane_keys: int) -> list[int]:
    """The lane of each row: as few lanes as hold ``sum(lengths)`` at ``lane_keys`` each, consecutive rows evenly.

    ``share=False`` gives every row its own lane (rows whose own hooks read their lane's last tokens).
    Attention in a shared lane costs (its tokens)^2, so the bound keeps that below the weight work saved.
    """
    n = len(lengths)
    n_lanes = n if not share else min(n, max(1, -(-sum(lengths) // lane_keys)))
    return [i * n_lanes // n for i in range(n)]


@dataclass
class LaneBatch:
    """Which lane and columns hold each row's physical tokens, and the per-lane positions and masks."""

    rows: list[GenerationRow]
    lanes: list[int]
    pad_id: int = 0
    windows: tuple[int | None, ...] = (None,)
    columns: list[list[int]] = field(default_factory=list)
    queries: list[slice] = field(default_factory=list)
    n_columns: int = 0
    positions: Float[Tensor, "batch key_pos"] | None = None
    masks: dict[int | None, Bool[Tensor, "batch query_pos key_pos"]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.columns = [[] for _ in self.rows]
        self.n_lanes = max(self.lanes) + 1

    def feed(self, new_tokens: Sequence[Sequence[int]]) -> list[list[int]]:
        """Place each row's new tokens (already in its layout) in its lane, each lane right-aligned in ``q`` columns.

        Returns the padded token lanes for the forward and rebuilds positions and mask for it.
        """
        fed: list[list[int]] = [[] for _ in range(self.n_lanes)]
        offsets = []
        for lane, tokens in zip(self.lanes, new_tokens):
            offsets.append(len(fed[lane]))
            fed[lane].extend(int(t) for t in tokens)
        q = max(len(tokens) for tokens in fed)
        start, self.n_columns = self.n_columns, self.n_columns + q
        self.queries = []
        for cols, lane, offset, tokens in zip(self.columns, self.lanes, offsets, new_tokens):
            first = q - len(fed[lane]) + offset
            self.queries.append(slice(first, first + len(tokens)))
            cols.extend(range(start + first, start + first + len(tokens)))
        self._build(q)
        return [[self.pad_id] * (q - len(tokens)) + tokens for tokens in fed]

    def _build(self, q: int) -> None:
        positions = torch.zeros(self.n_lanes, self.n_columns)
        masks = {w: torch.ones(self.n_lanes, q, self.n_columns, dtype=torch.bool) for w in self.windows}
        for row, lane, cols, queries in zip(self.rows, self.lanes, self.columns, self.queries):
            index = torch.tensor(cols, dtype=torch.long)
            positions[lane, index] = row.layout.positions("shared")
            n_new = queries.stop - queries.start
            if n_new:
                for window, mask in masks.items():
                    own = row.layout.blocked(row.config.mode, n_queries=n_new, n_keys=len(row.layout), window=window)
                    mask[lane, queries, index] = own
        self.positions, self.masks = positions, masks

    def last_columns(self) -> list[int]:
        """The columns of the last forward that hold some row's last token, each once, in order."""
        return sorted({query.stop - 1 for query in self.queries})

    def row_last_logits(self, logits: Float[Tensor, "batch read d_vocab"], i: int, read: list[int]) -> Float[Tensor, "1 d_vocab"]:
        """Row ``i``'s last token's logits, from a forward that computed only the columns ``read``."""
        return logits[self.lanes[i], read.index(self.queries[i].stop - 1)][None]

    def row_logits(self, logits: Float[Tensor, "batch pos d_vocab"], i: int) -> Float[Tensor, "pos d_vocab"]:
        """Row ``i``'s logits rows of the last forward (one per token it fed)."""
        return logits[self.lanes[i], self.queries[i]]

    def row_patterns(self, patterns: dict[int, Tensor], i: int) -> dict[int, Tensor]:
        """Row ``i``'s patterns on its own queries and key columns: ``[1, head, n_new, K_row]``."""
        index = torch.tensor(self.columns[i], dtype=torch.long)
        lane = self.lanes[i]
        out = {}
        for layer, pattern in patterns.items():
            rows = pattern[lane : lane + 1, :, self.queries[i]]
            out[layer] = rows.index_select(-1, index.to(rows.device))
        return out

    def current_positions(self) -> Float[Tensor, "batch key_pos"]:
        assert self.positions is not None, "feed builds the positions before a forward"
        return self.positions

    def current_mask(self, window: int | None = None) -> Callable[[int, int], Bool[Tensor, "batch query_pos key_pos"]]:
        """``blocked(q, K)`` giving the mask ``feed`` built for ``window``: one object per forward, shared by its layers."""

        def blocked(q: int, k: int) -> Tensor:
            assert window in self.masks, "feed builds the masks before a forward"
            return self.masks[window]

        return blocked

    def context(self, first_row: int = 0) -> StepContext:
        """What :func:`~tempo_lens.hook_context.current_step` says during the forward ``feed`` prepared."""
        return step_context(
            [
                row_in_forward(
                    row.layout,
                    row.token_strings,
                    q.stop - q.start,
                    row=first_row + i,
                    lane=lane,
                    queries=(q.start, q.stop),
                    key_columns=cols,
                )
                for i, (row, lane, q, cols) in enumerate(zip(self.rows, self.lanes, self.queries, self.columns))
            ]
        )

    def hooks(self, backend: Backend) -> list:
        return tempo_position_hooks(backend, self.current_positions) + windowed_block_hooks(backend, self.current_mask)


def pad_id(backend: Backend) -> int:
    """A token id to fill padding with (never attended): the tokenizer's pad or EOS id when it is in the vocabulary."""
    tokenizer = getattr(backend.model, "tokenizer", None)
    vocab = int(backend.model.cfg.d_vocab)
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and 0 <= value < vocab:
            return value
    return 0


def lane_columns(prompt_lengths: Sequence[int], lanes: Sequence[int], widths: Sequence[int]) -> int:
    """The most key columns the lanes can reach: the widest lane's prompts, then per step the widest lane's siblings.

    ``widths``: the most siblings a row can keep at each step (:func:`~tempo_lens.generation.steps.step_widths`).
    """
    prompts, rows = [0] * (max(lanes) + 1), [0] * (max(lanes) + 1)
    for n, lane in zip(prompt_lengths, lanes):
        prompts[lane] += n
        rows[lane] += 1
    return max(prompts) + sum(widths) * max(rows)


def lanes_of(backend: Backend, rows: list[GenerationRow]) -> list[int]:
    """Rows with hooks of their own (similarity pruning reads its lane's last tokens) get a lane each.

    So do all rows when shared lanes could pass the model's physical limit (a position table's rows):
    each row's own worst case is within it (:func:`~tempo_lens.generation.steps.check_context`).
    """
    share = not any(row.hooks for row in rows)
    steps, width = rows[0].config.max_steps, rows[0].config.max_parallel
    lanes = assign_lanes([len(row.ids) + steps * width for row in rows], share, LANE_KEYS)
    limit = backend.physical_limit()
    if limit is not None and lane_columns([len(row.ids) for row in rows], lanes, step_widths(rows[0].config)) > limit:
        lanes = list(range(len(rows)))
    return lanes
