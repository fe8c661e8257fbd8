"""Sibling identity, and which residual rows predict which tokens in TEMPO.

A sibling is named by ``(step, rank)``: rank 0 is the most likely token of its step. Tools take
and return :class:`Sibling` records and resolve them to physical indices only through
:meth:`TokenLayout.physical_index`, so nobody computes an index by hand.

Which rows predict which token. An ordinary model reads token ``t+1`` off the row of token ``t``.
In TEMPO a step has several rows, one per sibling, and generation turns them into one distribution:

- step 0's siblings are chosen from the last prompt row;
- step ``s > 0``'s siblings are chosen from the rows of step ``s - 1``'s siblings, combined by the
  generation's ``next_token_source``: ``"mixture"`` (default; the rows' softmax distributions
  averaged with weights proportional to the siblings' selection probabilities), ``"top"`` (rank 0's
  row) or ``"last"`` (the last sibling's row).

So a sibling's *own* token is predicted by the previous step's rows (:func:`reader_rows`), and a
sibling's own row predicts the *next* step's tokens. Both readings are what the tools report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from .errors import InvalidInputError
from .layout import MODES, PROMPT_STEP, TokenLayout
from .text import visible_token
from .validation import check_token_ids

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

NextTokenSource = Literal["mixture", "top", "last"]
NEXT_TOKEN_SOURCES: tuple[NextTokenSource, ...] = get_args(NextTokenSource)


@dataclass(frozen=True)
class Sibling:
    """One token of a step: ``(step, rank)`` identifies it, ``token_id`` / ``token`` say what it is."""

    step: int
    rank: int
    token_id: int
    token: str

    def index(self, layout: TokenLayout) -> int:
        """Its physical index in ``layout`` (checked: the layout must hold this token there)."""
        index = layout.physical_index(self.step, self.rank)
        if layout.token_ids[index] != self.token_id:
            raise InvalidInputError(
                f"sibling {self.label} is token {self.token_id} but this layout has {layout.token_ids[index]} at "
                f"step {self.step} rank {self.rank}; use siblings of the same run"
            )
        return index

    @property
    def label(self) -> str:
        """``"s3.1 ␣cat"``: step, rank and the token with whitespace made visible."""
        return f"s{self.step}.{self.rank} {visible_token(self.token)}"


@dataclass
class RunView:
    """What the tools read from a generation, a saved run or a bare layout."""

    layout: TokenLayout
    token_strings: list[str]
    mode: str
    next_token_source: str
    name: str

    def sibling(self, index: int) -> Sibling:
        layout = self.layout
        return Sibling(layout.steps[index], layout.rank_of(index), layout.token_ids[index], self.token_strings[index])

    def siblings(self, step: int) -> list[Sibling]:
        return [self.sibling(i) for i in self.layout.step_range(step)]


RunSource = Any  # GenerationResult | CapturedRun | TokenLayout | RunView


def run_view(source: RunSource, model: TransformerBridge | None = None) -> RunView:
    """A :class:`RunView` of a :class:`GenerationResult`, a :class:`CapturedRun`, a bare layout or a view.

    A bare layout has no token texts (they are decoded with ``model.tokenizer`` when given), no mode
    (``"isolated"``) and no next-token source (``"mixture"``).
    """
    if isinstance(source, RunView):
        return source
    if isinstance(source, TokenLayout):
        if model is not None and getattr(model, "cfg", None) is not None:
            check_token_ids(model, source.token_ids)  # before any id is decoded or replayed
        tokenizer = getattr(model, "tokenizer", None)
        strings = [tokenizer.decode([t]) if tokenizer is not None else f"<{t}>" for t in source.token_ids]
        return RunView(source, strings, "isolated", "mixture", "layout")
    layout = getattr(source, "layout", None)
    if not isinstance(layout, TokenLayout):
        raise InvalidInputError(f"expected a GenerationResult, CapturedRun or TokenLayout, got {type(source).__name__}")
    meta = getattr(source, "meta", {}) or {}
    config = getattr(source, "config", None)  # settings may sit on the result or on its generation config

    def setting(name: str, default: str) -> str:
        return getattr(source, name, None) or getattr(config, name, None) or meta.get(name) or default

    # a control replay's own mask (CapturedRun.mask), not the mode of the generation it replays
    source_name, mode = setting("next_token_source", "mixture"), getattr(source, "mask", None) or setting("mode", "isolated")
    return RunView(
        layout,
        list(source.token_strings),
        mode if mode in MODES else "isolated",
        source_name,
        str(getattr(source, "name", "run")),
    )


def siblings(source: RunSource, steps: Iterable[int] | None = None, model: TransformerBridge | None = None) -> list[Sibling]:
    """Every sibling of ``steps`` (default all steps), step by step, rank by rank."""
    view = run_view(source, model)
    chosen = range(view.layout.n_steps) if steps is None else steps
    return [s for step in chosen for s in view.siblings(int(step))]


Where = Sibling | tuple[int, int] | int


def physical_indices(layout: TokenLayout, where: Where | Sequence[Where]) -> list[int]:
    """Physical indices of siblings given as :class:`Sibling`, ``(step, rank)`` or a whole step (an int)."""
    if isinstance(where, (str, bytes)) or not isinstance(where, (Sibling, int, tuple, Iterable)):
        raise InvalidInputError(f"cannot read {where!r} as siblings; pass Siblings, (step, rank) pairs or steps")
    items = [where] if isinstance(where, (Sibling, int, tuple)) else list(where)
    indices: list[int] = []
    for item in items:
        if isinstance(item, Sibling):
            indices.append(item.index(layout))
        elif isinstance(item, tuple) and len(item) == 2:
            indices.append(layout.physical_index(int(item[0]), int(item[1])))
        elif isinstance(item, int) and not isinstance(item, bool):
            indices.extend(range(layout.n_prompt) if item == PROMPT_STEP else layout.step_range(item))
        else:
            raise InvalidInputError(f"cannot read {item!r} as a sibling; pass a Sibling, (step, rank) or a step")
    return sorted(set(indices))


def output_rows(layout: TokenLayout, step: int, source: str = "mixture") -> tuple[list[int], list[float]]:
    """The physical rows whose output is step ``step``'s next-token distribution, with weights summing to 1.

    Step -1 (the prompt): its last row. Step ``s``: the rows of its siblings combined by ``source``.
    """
    if source not in NEXT_TOKEN_SOURCES:
        raise InvalidInputError(f"unknown next-token source {source!r}; use one of {', '.join(NEXT_TOKEN_SOURCES)}")
    if not PROMPT_STEP <= step < layout.n_steps:
        raise InvalidInputError(f"no step {step}; the layout has steps 0..{layout.n_steps - 1} (-1: the prompt)")
    if step == PROMPT_STEP:
        return [layout.n_prompt - 1], [1.0]
    rows = list(layout.step_range(step))
    if source == "top":
        return rows[:1], [1.0]
    if source == "last":
        return rows[-1:], [1.0]
    probs = [layout.probs[i] for i in rows]
    total = sum(probs)
    return rows, [p / total for p in probs]


def reader_rows(layout: TokenLayout, step: int, source: str = "mixture") -> tuple[list[int], list[float]]:
    """The rows whose output chose ``step``'s siblings: :func:`output_rows` of the step before."""
    if not 0 <= step < layout.n_steps:
        raise InvalidInputError(f"no step {step}; the layout has steps 0..{layout.n_steps - 1}")
    return output_rows(layout, step - 1, source)
