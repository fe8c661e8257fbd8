"""Batched TEMPO: many prompts through one forward per step, each row exactly as ``generate`` makes it.

Rows differ in prompt length, in how many siblings each step keeps and in when they stop. Each row
lives in a *lane* (a batch index of the forward); several short rows may share one lane, their tokens
side by side, which saves the padding a lane per row would need. Every forward feeds ``q`` = the
widest lane's new tokens; narrower lanes are left-padded. A :class:`LaneBatch` maps each row's physical
tokens to lane columns; from it come, per lane, the positions (``[batch, K]``, padding at 0) for the
rotary hooks and the mask (``[batch, q, K]``: each row's own layout mask on its queries and columns,
every other column hidden; one per sliding window the model has, each row's window counted in its own
physical positions) for the attention-score hooks. So a row never sees padding or another
row, and padding shifts no logical position; a finished row feeds nothing. Each row's patterns are cut
back to its own queries and columns before capture and pruning see them, so they have the shapes a
lone generation records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..activation_cache import ActivationRecorder, NamesFilter, resolve_names
from ..backends import backend_for
from ..errors import InvalidInputError
from ..hooks import PatternRecorder, tempo_position_hooks, windowed_block_hooks
from .config import GenerationConfig, check_int
from .hook_context import StepContext, in_forward, row_in_forward, step_context
from .memory import check_fits, default_batch_size
from .progress import step_bar
from .result import GenerationResult
from .row import GenerationRow, checked_ids, resolve_config
from .single import forward_step, new_cache
from .steps import step_widths

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

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
        """What :func:`~tempo_lens.generation.hook_context.current_step` says during the forward ``feed`` prepared."""
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

    def hooks(self, model: TransformerBridge) -> list:
        return tempo_position_hooks(model, self.current_positions) + windowed_block_hooks(model, self.current_mask)


def _pad_id(model: TransformerBridge) -> int:
    """A token id to fill padding with (never attended): the tokenizer's pad or EOS id when it is in the vocabulary."""
    tokenizer = getattr(model, "tokenizer", None)
    vocab = int(model.cfg.d_vocab)
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


def _lanes(model: TransformerBridge, rows: list[GenerationRow]) -> list[int]:
    """Rows with hooks of their own (similarity pruning reads its lane's last tokens) get a lane each.

    So do all rows when shared lanes could pass the model's physical limit (a position table's rows):
    each row's own worst case is within it (:func:`~tempo_lens.generation.steps.check_context`).
    """
    share = not any(row.hooks for row in rows)
    steps, width = rows[0].config.max_steps, rows[0].config.max_parallel
    lanes = assign_lanes([len(row.ids) + steps * width for row in rows], share, LANE_KEYS)
    limit = backend_for(model).physical_limit()
    if limit is not None and lane_columns([len(row.ids) for row in rows], lanes, step_widths(rows[0].config)) > limit:
        lanes = list(range(len(rows)))
    return lanes


def _run_rows(
    model: TransformerBridge,
    rows: list[GenerationRow],
    bar: Any = None,
    activations: ActivationRecorder | None = None,
    first_row: int = 0,
) -> None:
    """Drive ``rows`` to their end through one forward per step (``bar``: a progress bar to advance per step).

    ``activations`` records hook points per token; ``first_row``: the index of ``rows[0]`` among the call's prompts.
    """
    windows = tuple(dict.fromkeys(backend_for(model).attention_windows()))
    batch = LaneBatch(rows, _lanes(model, rows), pad_id=_pad_id(model), windows=windows)
    layers = set().union(*(row.recorded_layers for row in rows))
    with PatternRecorder(layers) as recorder, torch.no_grad():
        hooks = batch.hooks(model) + recorder.hooks() + [h for row in rows for h in row.hooks]
        hooks += activations.hooks() if activations is not None else []
        with model.hooks(fwd_hooks=hooks):
            cache = new_cache(model, batch.n_lanes)
            fed = batch.feed([row.ids for row in rows])
            with in_forward(batch.context(first_row)):
                logits = forward_step(model, fed, cache)
            recorder.take()
            for i, row in enumerate(rows):
                row.read_prompt(batch.row_logits(logits, i))
            while not all(row.done for row in rows):
                new = [[] if row.done else row.choose() for row in rows]
                fed = batch.feed(new)
                with in_forward(batch.context(first_row)):
                    logits = forward_step(model, fed, cache)
                patterns = recorder.take()
                for i, (row, ids) in enumerate(zip(rows, new)):
                    if ids:
                        row.read_step(batch.row_logits(logits, i), batch.row_patterns(patterns, i))
                if bar is not None:
                    bar.update()


def generate_batch(
    model: TransformerBridge,
    prompts: Sequence[str | Sequence[int]],
    config: GenerationConfig | None = None,
    *,
    batch_size: int | None = None,
    keep_logits: bool = False,
    names_filter: NamesFilter = None,
    progress: bool | None = None,
    **overrides: Any,
) -> list[GenerationResult]:
    """:func:`~tempo_lens.generation.generate` for many prompts, ``batch_size`` rows per forward.

    Takes the settings of ``generate`` (a :class:`GenerationConfig` and/or keyword overrides) and returns
    one result per prompt, in order, each what ``generate`` returns for that prompt (captures and
    pruning included), named ``"<mode>-<i>"`` with ``i`` the prompt's index in ``prompts`` (``result.name``;
    the tools that group by run tell runs apart by it). ``batch_size`` defaults to what the free memory allows, up to 16. Every prompt
    is checked before any model work. ``names_filter``: hook points recorded per token, as in ``generate``
    (each result's ``cache``; the rows of other prompts and the padding are cut away). ``progress``: a progress bar over every batch's steps (default:
    only for long runs at a terminal, :mod:`.progress`).
    """
    config = resolve_config(config, overrides)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise InvalidInputError("prompts must be a non-empty list of prompts (text or token ids); for one prompt use generate()")
    checked = [checked_ids(model, p, config) for p in prompts]  # tokenise (once) and check all first
    longest = max(len(ids) for ids in checked)
    if batch_size is None:
        batch_size = default_batch_size(model, longest, config.max_steps, config.max_parallel)
    batch_size = check_int(batch_size, "batch_size", 1)
    check_fits(model, longest, config.max_steps, config.max_parallel, min(batch_size, len(prompts)))
    names = resolve_names(model, names_filter)
    backend_for(model).prepare()
    results: list[GenerationResult] = []
    with step_bar(-(-len(prompts) // batch_size) * config.max_steps, progress) as bar:
        for first in range(0, len(prompts), batch_size):
            chunk = zip(prompts[first : first + batch_size], checked[first : first + batch_size])
            rows = [
                GenerationRow.start(model, p, config, row=i, keep_logits=keep_logits, ids=ids) for i, (p, ids) in enumerate(chunk)
            ]
            for row in rows:
                row.warn_stacklevel = 4  # choose → _run_rows → generate_batch → caller
            activations = ActivationRecorder(names) if names else None
            _run_rows(model, rows, bar, activations, first)
            for i, row in enumerate(rows):
                result = row.result()
                result.name = f"{config.mode}-{first + i}"
                if activations is not None:
                    result.cache = activations.cache(first + i, row.layout, row.token_strings)
                results.append(result)
    return results
