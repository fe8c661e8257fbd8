"""Which step and which siblings the current forward holds, for any hook that asks during generation.

``generate`` and ``generate_batch`` set a :class:`StepContext` around every forward (a ``contextvars``
variable, so threads and nested calls each see their own); :func:`current_step` returns it, or None
outside generation (a plain ``run_with_hooks``, a replay). A hook reads it when called::

    seen = []
    def note(resid, hook):
        ctx = tempo_lens.current_step()
        seen.append((ctx.step, [s.label for s in ctx.siblings[0]]))
        return resid
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", note)]):
        tempo_lens.generate(model, "The cat sat on the", max_steps=3)

The prompt's forward is step -1 (no siblings); the forward of step ``s`` feeds step ``s``'s siblings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import InvalidInputError
from .layout import PROMPT_STEP, TokenLayout
from .siblings import Sibling


@dataclass(frozen=True)
class RowInForward:
    """One generation row (one prompt) inside a forward: where its new tokens sit, and what they are.

    ``row``: the prompt's index in the ``generate_batch`` call (0 for ``generate``); ``lane``: its batch
    index in the forward; ``queries``: ``(start, stop)`` of its new tokens on the forward's ``pos`` axis;
    ``key_columns``: the forward's key columns holding the row's physical tokens ``0..K-1`` in order
    (the last axis of ``hook_pattern``); ``physical_range``: the new tokens' physical indices in the row's layout.
    """

    row: int
    lane: int
    step: int
    queries: tuple[int, int]
    key_columns: tuple[int, ...]
    physical_range: tuple[int, int]
    siblings: tuple[Sibling, ...]


@dataclass(frozen=True)
class StepContext:
    """The forward in progress: its step (-1: the prompt) and, per generation row it feeds, where and what."""

    step: int
    rows: tuple[RowInForward, ...]

    @property
    def siblings(self) -> tuple[tuple[Sibling, ...], ...]:
        """The siblings this forward feeds, one tuple per row (empty for the prompt's forward)."""
        return tuple(r.siblings for r in self.rows)

    @property
    def physical_range(self) -> tuple[int, int]:
        """The physical indices this forward feeds, for a forward of one row (``generate``)."""
        if len(self.rows) != 1:
            raise InvalidInputError(
                f"this forward feeds {len(self.rows)} rows of generate_batch; read ctx.rows[i].physical_range for row i"
            )
        return self.rows[0].physical_range


_CURRENT: ContextVar[StepContext | None] = ContextVar("tempo_lens_current_step", default=None)


def current_step() -> StepContext | None:
    """The :class:`StepContext` of the forward running now, or None outside ``generate`` / ``generate_batch``."""
    return _CURRENT.get()


@contextmanager
def in_forward(context: StepContext) -> Iterator[StepContext]:
    """Make ``context`` what :func:`current_step` returns while the block runs (restored after, even on error)."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def row_in_forward(
    layout: TokenLayout,
    token_strings: Sequence[str],
    n_new: int,
    *,
    row: int = 0,
    lane: int = 0,
    queries: tuple[int, int] | None = None,
    key_columns: Sequence[int] | None = None,
) -> RowInForward:
    """The entry of a row whose layout's last ``n_new`` tokens are being fed (default: alone in its forward)."""
    stop = len(layout)
    start = stop - n_new
    step = layout.steps[start] if n_new and start >= layout.n_prompt else PROMPT_STEP
    siblings = tuple(
        Sibling(layout.steps[i], layout.rank_of(i), layout.token_ids[i], token_strings[i])
        for i in range(start, stop)
        if step >= 0
    )
    return RowInForward(
        row=row,
        lane=lane,
        step=step,
        queries=(0, n_new) if queries is None else queries,
        key_columns=tuple(range(stop)) if key_columns is None else tuple(key_columns),
        physical_range=(start, stop),
        siblings=siblings,
    )


def step_context(rows: Sequence[RowInForward]) -> StepContext:
    """The context of a forward feeding ``rows`` (rows that feed nothing are left out); its step is theirs."""
    fed = tuple(r for r in rows if r.physical_range[1] > r.physical_range[0])
    steps = {r.step for r in fed}
    assert len(steps) == 1, f"the rows of one forward feed one step, got steps {sorted(steps)}"
    return StepContext(step=steps.pop(), rows=fed)
