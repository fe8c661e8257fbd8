"""TEMPO on a backend without hook points: each forward gets its positions and mask as inputs.

The rows, lanes and decisions are those of the hook-driven generator (:class:`~.row.GenerationRow`,
:class:`~.batch.LaneBatch`): a lone generation is a batch of one row. Per forward, the lane batch's
positions and mask, plus each column's physical index in its own row (for window rules), go to
:meth:`~tempo_lens.backends.base.Backend.tempo_forward` as one :class:`~tempo_lens.backends.base.TempoStep`.
With ``full_context`` (remote execution, which keeps no cache between requests, and its dry run)
every forward feeds every column so far with the mask rows of every earlier forward; those rows never
change, since pruning hides a token only from later queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..backends import Backend, backend_for
from ..backends.base import TempoStep
from ..errors import InvalidInputError
from .lanes import LaneBatch, lanes_of, pad_id
from .result import GenerationResult
from .row import GenerationRow, resolve_config

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class Siblings:
    """What one row feeds in a forward, as user code run inside that forward sees it.

    ``row``: the prompt's index in its batch (0 for ``generate``); ``step``: -1 for the prompt;
    ``lane``: its batch index in the forward; ``queries``: its columns among the forward's tokens
    (``model.<layers>[i].output[lane, queries]`` are its residuals); ``ids`` and ``probs``: its tokens.
    """

    row: int
    step: int
    lane: int
    queries: slice
    ids: list[int]
    probs: list[float]


@dataclass
class StepTraffic:
    """What one forward of a remote run sends and brings back (counted locally by a dry run)."""

    step: int  # -1: the prompt's forward
    traces: int
    tokens: int  # columns fed (every column so far: a remote forward keeps no cache)
    bytes_sent: int  # token ids, position ids and masks
    bytes_saved: int  # saved logits rows and attention weights


@dataclass
class ExplicitForwards:
    """Runs a lane batch's forwards through ``backend.tempo_forward`` (with a cache, or with full context)."""

    backend: Backend
    batch: LaneBatch
    full_context: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    traffic: list[StepTraffic] | None = None
    cache: Any = None
    tokens: list[Tensor] = field(default_factory=list)
    masks: dict[int | None, list[Tensor]] = field(default_factory=dict)
    readers: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.full_context:
            self.cache = self.backend.new_cache(self.batch.n_lanes)

    def _full(self, fed: Tensor, blocked: dict[int | None, Tensor]) -> tuple[Tensor, dict[int | None, Tensor]]:
        """Every column so far and, per window, the mask rows of every forward so far (each padded as hidden to the right)."""
        self.tokens.append(fed)
        full = {}
        for window, mask in blocked.items():
            history = self.masks.setdefault(window, [])
            history.append(mask)
            k = mask.shape[-1]
            full[window] = torch.cat([torch.nn.functional.pad(m, (0, k - m.shape[-1]), value=True) for m in history], dim=1)
        return torch.cat(self.tokens, dim=1), full

    def __call__(
        self, new: list[list[int]], layers: tuple[int, ...], step: int, last_only: bool = False
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """One forward of ``new`` (one list per row); ``last_only``: return only each lane's last row."""
        batch = self.batch
        fed = torch.tensor(batch.feed(new), dtype=torch.long)
        q = fed.shape[1]
        masks = dict(batch.masks)  # the layout's, per window (None: full); feed builds new tensors each forward
        tokens = fed
        if self.full_context:
            tokens, masks = self._full(fed, masks)
        shift = tokens.shape[1] - q
        siblings = [
            Siblings(
                row=i,
                step=row.layout.n_steps - 1 if step >= 0 else -1,
                lane=batch.lanes[i],
                queries=slice(batch.queries[i].start + shift, batch.queries[i].stop + shift),
                ids=[int(t) for t in ids],
                probs=list(row.layout.probs[len(row.layout) - len(ids) :]) if step >= 0 else [],
            )
            for i, (row, ids) in enumerate(zip(batch.rows, new))
            if ids
        ]
        tempo_step = TempoStep(
            tokens=tokens,
            positions=batch.current_positions(),
            blocked=masks[None],
            windowed={window: mask for window, mask in masks.items() if window is not None},
            layers=layers,
            n_out=1 if last_only else q,
            siblings=siblings,
            readers=self.readers,
        )
        logits, patterns = self.backend.tempo_forward(tempo_step, self.cache, **self.options)
        if self.traffic is not None:
            sent = 2 * tokens.numel() * 8 + len(masks) * masks[None].numel() * torch.finfo(self.backend.dtype).bits // 8
            saved = logits.numel() * logits.element_size() + sum(p.numel() * p.element_size() for p in patterns.values())
            self.traffic.append(StepTraffic(step, 1, tokens.shape[1], int(sent), int(saved)))
        return logits, patterns


def ends_unread(row: GenerationRow) -> bool:
    """Whether the forward that would feed ``row``'s newest step could only end it, unread.

    So on its last step (``max_steps``) with nothing taken from that forward: no capture of the step,
    no pruning (it reads patterns or residuals), no kept logits. Its tokens and stop reason are known
    without it (:meth:`~.row.GenerationRow.apply_stop_rule`); the logits it would give are never used.
    """
    step = row.layout.n_steps - 1
    captured = row.capture is not None and row.config.capture.wants_step(step)
    return row.layout.n_steps >= row.config.max_steps and not captured and row.pruning is None and not row.keep_logits


def drive_rows(
    backend: Backend,
    rows: list[GenerationRow],
    bar: Any = None,
    *,
    intervene: Callable[[Any, list[Siblings]], Any] | None = None,
    remote: bool = False,
    traffic: list[StepTraffic] | None = None,
) -> None:
    """Drive ``rows`` to their end, one ``tempo_forward`` per step (``traffic``: count a remote run's requests).

    The forward after the last step is left out where nothing would read it (:func:`ends_unread`) and no user
    code runs in forwards (``intervene``); a remote run or its dry run keeps it (their requests are counted).
    """
    readers = [(name, fn) for row in rows for name, fn in row.hooks]  # e.g. similarity pruning's residuals
    for row in rows:
        row.warn_stacklevel += 1  # choose → drive_rows → the generator → caller
    windows = tuple(dict.fromkeys([None, *backend.attention_windows()]))
    batch = LaneBatch(rows, lanes_of(backend, rows), pad_id=pad_id(backend), windows=windows)
    layers = tuple(sorted(set().union(*(row.recorded_layers for row in rows))))
    forwards = ExplicitForwards(
        backend,
        batch,
        full_context=remote or traffic is not None,
        options={"intervene": intervene, "remote": remote},
        traffic=traffic,
        readers=readers,
    )
    with torch.no_grad():
        # each row ends its lane: the prompt's forward needs its last row only, unless a reader (similarity pruning's
        # residuals) needs every row it fed
        alone = len(set(batch.lanes)) == len(rows) and not readers
        logits, _ = forwards([row.ids for row in rows], (), -1, last_only=alone)
        for i, row in enumerate(rows):
            row.read_prompt(logits[batch.lanes[i]] if alone else batch.row_logits(logits, i))
        while not all(row.done for row in rows):
            new: list[list[int]] = []
            for row in rows:  # a loop, not a comprehension: the warning's stack level counts frames
                new.append([] if row.done else row.choose())
            step = max(row.layout.n_steps for row in rows) - 1
            if intervene is None and not forwards.full_context and all(ends_unread(r) for r, ids in zip(rows, new) if ids):
                for row, ids in zip(rows, new):
                    if ids:
                        row.apply_stop_rule()
                if bar is not None:
                    bar.update()
                break
            logits, patterns = forwards(new, layers, step)
            for i, (row, ids) in enumerate(zip(rows, new)):
                if ids:
                    row.read_step(batch.row_logits(logits, i), batch.row_patterns(patterns, i))
            if bar is not None:
                bar.update()


def dry_run(
    model: TransformerBridge, prompt: Any, config: Any = None, *, keep_logits: bool = False, **overrides: Any
) -> tuple[GenerationResult, list[StepTraffic]]:
    """Generate locally in the remote shape (no cache, every column each step) and count each step's traffic.

    For an nnsight model about to run with ``remote=True``. Returns the result (the tokens a remote run
    makes) and one :class:`StepTraffic` per forward: 1 trace, the columns fed, the bytes sent (ids,
    positions, masks) and saved (logits, attention).
    """
    backend = backend_for(model)
    if backend.uses_hook_points:
        raise InvalidInputError("dry_run counts the requests of remote execution, which needs an nnsight model")
    config = resolve_config(config, overrides)
    row = GenerationRow.start(backend, prompt, config, keep_logits=keep_logits)
    traffic: list[StepTraffic] = []
    drive_rows(backend, [row], traffic=traffic)
    return row.result(), traffic
