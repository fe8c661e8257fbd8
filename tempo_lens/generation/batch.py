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
from typing import TYPE_CHECKING, Any

import torch

from ..activation_cache import ActivationRecorder, NamesFilter, resolve_names
from ..backends import Backend, backend_for
from ..errors import InvalidInputError
from ..hook_context import in_forward
from ..hooks import PatternRecorder
from .config import GenerationConfig, check_int
from .explicit import drive_rows
from .lanes import LANE_KEYS, LaneBatch, assign_lanes, lane_columns  # noqa: F401  (re-exported: the lanes were defined here)
from .lanes import lanes_of as _lanes
from .lanes import pad_id as _pad_id
from .memory import check_fits, default_batch_size
from .progress import step_bar
from .result import GenerationResult
from .row import GenerationRow, checked_ids, resolve_config
from .single import check_explicit_options, forward_step, new_cache

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _run_rows(
    backend: Backend,
    rows: list[GenerationRow],
    bar: Any = None,
    activations: ActivationRecorder | None = None,
    first_row: int = 0,
    **explicit: Any,
) -> None:
    """Drive ``rows`` to their end through one forward per step (``bar``: a progress bar to advance per step).

    ``activations`` records hook points per token; ``first_row``: the index of ``rows[0]`` among the call's prompts.
    ``explicit``: ``intervene`` / ``remote`` for a backend without hook points, which drives the rows itself.
    """
    if not backend.uses_hook_points:
        return drive_rows(backend, rows, bar, **explicit)
    windows = tuple(dict.fromkeys(backend.attention_windows()))
    batch = LaneBatch(rows, _lanes(backend, rows), pad_id=_pad_id(backend), windows=windows)
    layers = set().union(*(row.recorded_layers for row in rows))
    with PatternRecorder(layers) as recorder, torch.no_grad():
        hooks = batch.hooks(backend) + recorder.hooks() + [h for row in rows for h in row.hooks]
        hooks += activations.hooks() if activations is not None else []
        with backend.model.hooks(fwd_hooks=hooks):
            cache = new_cache(backend, batch.n_lanes)
            fed = batch.feed([row.ids for row in rows])
            read = batch.last_columns()  # a prompt's forward is read at each row's last token only
            with in_forward(batch.context(first_row)):
                logits = backend.forward_read(fed, cache, read)
            recorder.take()
            for i, row in enumerate(rows):
                row.read_prompt(batch.row_last_logits(logits, i, read))
            while not all(row.done for row in rows):
                new = [[] if row.done else row.choose() for row in rows]
                fed = batch.feed(new)
                with in_forward(batch.context(first_row)):
                    logits = forward_step(backend, fed, cache)
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
    intervene: Callable[[Any, list[Any]], Any] | None = None,
    remote: bool = False,
    **overrides: Any,
) -> list[GenerationResult]:
    """:func:`~tempo_lens.generation.generate` for many prompts, ``batch_size`` rows per forward.

    Takes the settings of ``generate`` (a :class:`GenerationConfig` and/or keyword overrides) and returns
    one result per prompt, in order, each what ``generate`` returns for that prompt (captures and
    pruning included), named ``"<mode>-<i>"`` with ``i`` the prompt's index in ``prompts`` (``result.name``;
    the tools that group by run tell runs apart by it). ``batch_size`` defaults to what the free memory allows, up to 16. Every prompt
    is checked before any model work. ``names_filter``: hook points recorded per token, as in ``generate``
    (each result's ``cache``; the rows of other prompts and the padding are cut away). ``progress``: a progress bar over every batch's steps (default:
    only for long runs at a terminal, :mod:`.progress`). ``intervene`` and ``remote``: as for ``generate``
    (nnsight models only).
    """
    backend = backend_for(model)
    check_explicit_options(backend, intervene, remote, names_filter)
    config = resolve_config(config, overrides)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise InvalidInputError("prompts must be a non-empty list of prompts (text or token ids); for one prompt use generate()")
    checked = [checked_ids(backend, p, config) for p in prompts]  # tokenise (once) and check all first
    longest = max(len(ids) for ids in checked)
    if batch_size is None:
        batch_size = default_batch_size(backend, longest, config.max_steps, config.max_parallel)
    batch_size = check_int(batch_size, "batch_size", 1)
    check_fits(backend, longest, config.max_steps, config.max_parallel, min(batch_size, len(prompts)))
    names = resolve_names(model, names_filter)
    backend.prepare()
    results: list[GenerationResult] = []
    with step_bar(-(-len(prompts) // batch_size) * config.max_steps, progress) as bar:
        for first in range(0, len(prompts), batch_size):
            chunk = zip(prompts[first : first + batch_size], checked[first : first + batch_size])
            rows = [
                GenerationRow.start(backend, p, config, row=i, keep_logits=keep_logits, ids=ids)
                for i, (p, ids) in enumerate(chunk)
            ]
            for row in rows:
                row.warn_stacklevel = 4  # choose → _run_rows → generate_batch → caller
            activations = ActivationRecorder(names) if names else None
            explicit = {"intervene": intervene, "remote": remote} if intervene or remote else {}
            _run_rows(backend, rows, bar, activations, first, **explicit)
            for i, row in enumerate(rows):
                result = row.result()
                result.name = f"{config.mode}-{first + i}"
                if activations is not None:
                    result.cache = activations.cache(first + i, row.layout, row.token_strings)
                results.append(result)
    return results
