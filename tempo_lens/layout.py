"""The token layout: the one data structure every stage of tempo_lens reads.

A TEMPO sequence is stored physically in the order tokens were appended, but several tokens (the
*siblings* of one step) share one *logical* position. :class:`TokenLayout` maps each physical index
to its step (-1 for the prompt), logical position, selection probability and pruned state, and
derives everything else from that: which tokens are parallel, a step's physical range, the attention
mask of any forward pass. Hooks, generation, capture, analysis and the report all read it; none of
them recomputes these facts another way.

The layout is the one mutable object a generation updates, and only through its operations
(:meth:`append_step`, :meth:`prune`, :meth:`unprune`, :meth:`truncate`); its columns read as lists
but refuse edits, and ``version`` increases on every change so readers can memoise derived tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .errors import InvalidInputError, OutOfRangeError

PROMPT_STEP = -1
NOT_PRUNED = -1
Mode = Literal["isolated", "visible"]
MODES: tuple[Mode, ...] = get_args(Mode)


COLUMNS = ("token_ids", "steps", "logical_positions", "probs", "pruned_at", "prune_scores")


@dataclass
class LayoutRecord:
    """A stored :class:`~tempo_lens.layout.TokenLayout` (its invariants are checked by ``TokenLayout.from_dict``)."""

    token_ids: list[int]
    steps: list[int]
    logical_positions: list[int]
    probs: list[float | None]
    pruned_at: list[int]
    prune_scores: list[float | None]


class ReadOnlyList(list):
    """A column as its readers see it: a list that refuses changes (the layout changes only through its operations)."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a TokenLayout's columns are read-only; change the layout with append_step, prune, unprune or truncate")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse  # type: ignore[assignment]


class TokenLayout:
    """Physical index -> (token id, step, logical position, probability, pruned-at step, prune score).

    The columns (``token_ids``, ``steps``, ``logical_positions``, ``probs``, ``pruned_at``,
    ``prune_scores``) read as lists and cannot be edited in place; every change goes through
    :meth:`append_step`, :meth:`prune`, :meth:`unprune` or :meth:`truncate`, which bump ``version``, so
    tensors memoised on the version can never go stale.
    """

    def __init__(
        self,
        token_ids: Sequence[int] = (),
        steps: Sequence[int] = (),
        logical_positions: Sequence[int] = (),
        probs: Sequence[float] = (),
        pruned_at: Sequence[int] = (),
        prune_scores: Sequence[float] = (),
    ):
        values = (token_ids, steps, logical_positions, probs, pruned_at, prune_scores)
        lengths = {name: len(v) for name, v in zip(COLUMNS, values)}
        if len(set(lengths.values())) != 1:
            raise InvalidInputError(f"layout columns differ in length: {lengths}")
        self._columns: dict[str, list] = {name: list(v) for name, v in zip(COLUMNS, values)}
        self._version = 0
        self._views: dict[str, ReadOnlyList] = {}

    def _view(self, name: str) -> ReadOnlyList:
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = ReadOnlyList(self._columns[name])
        return view

    token_ids = property(lambda self: self._view("token_ids"), doc="Token id per physical index.")
    steps = property(lambda self: self._view("steps"), doc="Step per physical index (-1 for the prompt).")
    logical_positions = property(lambda self: self._view("logical_positions"), doc="Logical (RoPE) position per token.")
    probs = property(lambda self: self._view("probs"), doc="Selection probability per token (NaN for the prompt).")
    pruned_at = property(lambda self: self._view("pruned_at"), doc="Step after whose forward a token was pruned (-1: never).")
    prune_scores = property(lambda self: self._view("prune_scores"), doc="The score that pruned a token (NaN: not pruned).")

    @property
    def version(self) -> int:
        """Increases on every change; readers memoise derived tensors on it."""
        return self._version

    def _changed(self) -> None:
        self._version += 1
        self._views = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenLayout) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TokenLayout(n_prompt={self.n_prompt}, step_sizes={self.step_sizes()}, pruned={sum(self.is_pruned(i) for i in range(len(self)))})"

    def __str__(self) -> str:
        """A table, one row per token: physical index, step (-1: prompt), logical position, token id, probability, parallel, pruned."""
        header = ("physical", "step", "logical", "token_id", "prob", "parallel", "pruned")
        rows = [header] + [
            (
                str(i),
                str(self.steps[i]),
                str(self.logical_positions[i]),
                str(self.token_ids[i]),
                "" if self.steps[i] == PROMPT_STEP else f"{self.probs[i]:.4f}",
                "yes" if self.is_parallel(i) else "",
                f"at step {self.pruned_at[i]}" if self.is_pruned(i) else "",
            )
            for i in range(len(self))
        ]
        widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
        return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_prompt(cls, token_ids: Sequence[int]) -> TokenLayout:
        """A layout holding only the prompt at physical = logical positions 0..P-1."""
        n = len(token_ids)
        return cls(
            [int(t) for t in token_ids],
            [PROMPT_STEP] * n,
            list(range(n)),
            [float("nan")] * n,
            [NOT_PRUNED] * n,
            [float("nan")] * n,
        )

    def append_step(self, token_ids: Sequence[int], probs: Sequence[float]) -> range:
        """Append one step's siblings (highest probability first) at the next logical position."""
        if len(token_ids) == 0 or len(token_ids) != len(probs):
            raise InvalidInputError("a step needs at least one token and one probability per token")
        step, position, start = self.n_steps, self.next_logical_position, len(self)
        c = self._columns
        for token, prob in zip(token_ids, probs):
            c["token_ids"].append(int(token))
            c["steps"].append(step)
            c["logical_positions"].append(position)
            c["probs"].append(float(prob))
            c["pruned_at"].append(NOT_PRUNED)
            c["prune_scores"].append(float("nan"))
        self._changed()
        return range(start, len(self))

    def prune(self, physical: Iterable[int], at_step: int, score: float) -> None:
        """Mark tokens as pruned after ``at_step``'s forward: queries of later steps no longer see them."""
        physical = list(physical)
        if not 0 <= at_step < self.n_steps:
            raise InvalidInputError(f"cannot prune at step {at_step}: the layout has steps 0..{self.n_steps - 1}")
        for index in physical:  # check everything first: a refused decision changes nothing
            if self.pruned_at[index] != NOT_PRUNED:
                raise InvalidInputError(f"token {index} was already pruned at step {self.pruned_at[index]}")
            if self.steps[index] >= at_step:
                raise InvalidInputError(f"token {index} of step {self.steps[index]} cannot be pruned at step {at_step}")
        if len(set(physical)) != len(physical):
            raise InvalidInputError(f"a token is listed twice in {physical}")
        for index in physical:
            self._columns["pruned_at"][index] = at_step
            self._columns["prune_scores"][index] = float(score)
        self._changed()

    def unprune(self, physical: Iterable[int] | None = None) -> None:
        """Undo the pruning of ``physical`` tokens (default: every token), e.g. to replay a run unpruned."""
        chosen = range(len(self)) if physical is None else list(physical)
        for index in chosen:
            self._columns["pruned_at"][index] = NOT_PRUNED
            self._columns["prune_scores"][index] = float("nan")
        self._changed()

    def truncate(self, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` tokens, as if the later steps had never been appended.

        Pruning decided at a removed step is undone too. ``n_tokens`` must end a step (or lie in the
        prompt), so no step loses only some of its siblings. A change bumps ``version``, so memoised
        tensors (position and mask hooks) are rebuilt; truncating to the current length changes nothing.
        """
        if not 0 <= n_tokens <= len(self):
            raise InvalidInputError(f"cannot truncate to {n_tokens} tokens: the layout has {len(self)}")
        if 0 < n_tokens < len(self) and self.steps[n_tokens] >= 0 and self.steps[n_tokens] == self.steps[n_tokens - 1]:
            raise InvalidInputError(
                f"cannot truncate to {n_tokens} tokens: that splits step {self.steps[n_tokens]}; cut at a step boundary"
            )
        if n_tokens == len(self):
            return
        for column in self._columns.values():
            del column[n_tokens:]
        self._changed()
        n_steps = self.n_steps
        undone = [i for i, at in enumerate(self.pruned_at) if at != NOT_PRUNED and at >= n_steps]
        if undone:
            self.unprune(undone)

    # ---- basic facts --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._columns["token_ids"])

    @property
    def n_prompt(self) -> int:
        return sum(1 for s in self.steps if s == PROMPT_STEP)

    @property
    def n_steps(self) -> int:
        return (max(self.steps) + 1) if self.steps and max(self.steps) >= 0 else 0

    @property
    def next_logical_position(self) -> int:
        return self.n_prompt + self.n_steps

    def step_range(self, step: int) -> range:
        """Physical indices of a step's siblings (steps are stored contiguously)."""
        indices = [i for i, s in enumerate(self.steps) if s == step]
        if not indices:
            raise OutOfRangeError(f"no step {step} (the layout has {self.n_steps} steps)")
        return range(indices[0], indices[-1] + 1)

    def physical_index(self, step: int, rank: int) -> int:
        """The physical index of sibling ``rank`` (0 = most likely) of ``step``; step -1 indexes the prompt."""
        r = range(self.n_prompt) if step == PROMPT_STEP else self.step_range(step)
        if not 0 <= rank < len(r):
            raise OutOfRangeError(f"step {step} has {len(r)} token(s); no rank {rank}")
        return r.start + rank

    def rank_of(self, index: int) -> int:
        """A token's rank among its step's siblings (its prompt index for a prompt token)."""
        step = self.steps[index]
        return index - (0 if step == PROMPT_STEP else self.step_range(step).start)

    def unpruned(self) -> TokenLayout:
        """A copy with every pruning decision undone (the same tokens, nothing hidden)."""
        copy = TokenLayout.from_dict(self.to_dict())
        copy.unprune()
        return copy

    def step_sizes(self) -> list[int]:
        sizes = [0] * self.n_steps
        for s in self.steps:
            if s >= 0:
                sizes[s] += 1
        return sizes

    def is_parallel(self, index: int) -> bool:
        """A token of a step that selected two or more siblings (a collapsed set's survivor stays parallel)."""
        step = self.steps[index]
        return step >= 0 and self.step_sizes()[step] >= 2

    def is_pruned(self, index: int) -> bool:
        return self.pruned_at[index] != NOT_PRUNED

    def is_hidden(self, index: int, step: int) -> bool:
        """Whether queries of ``step`` cannot see token ``index``: it was pruned after an earlier step."""
        at = self.pruned_at[index]
        return at != NOT_PRUNED and at < step

    def parallel_steps(self) -> list[int]:
        return [s for s, n in enumerate(self.step_sizes()) if n >= 2]

    def survivors(self, step: int) -> list[int]:
        return [i for i in self.step_range(step) if not self.is_pruned(i)]

    # ---- tensors --------------------------------------------------------------------------
    def positions(self, kind: Literal["shared", "unique"] = "shared") -> Float[Tensor, " pos"]:
        """Logical positions (``"shared"``: siblings share one) or physical indices (``"unique"``)."""
        if kind == "shared":
            return torch.tensor(self.logical_positions, dtype=torch.float32)
        if kind == "unique":
            return torch.arange(len(self), dtype=torch.float32)
        raise InvalidInputError(f"unknown positions {kind!r}; use 'shared', 'unique' or a tensor")

    def steps_tensor(self) -> Int[Tensor, " pos"]:
        return torch.tensor(self.steps, dtype=torch.long)

    def pruned_at_tensor(self) -> Int[Tensor, " pos"]:
        return torch.tensor(self.pruned_at, dtype=torch.long)

    def parallel_tensor(self) -> Bool[Tensor, " pos"]:
        sizes = self.step_sizes()
        return torch.tensor([s >= 0 and sizes[s] >= 2 for s in self.steps], dtype=torch.bool)

    def hidden_tensor(self, step: int | Int[Tensor, "*steps 1"]) -> Bool[Tensor, "*steps pos"]:
        """:meth:`is_hidden` for every token; ``step`` may be a column of query steps (one row each)."""
        pruned_at = self.pruned_at_tensor()
        return (pruned_at != NOT_PRUNED) & (pruned_at < step)

    def blocked(
        self,
        mode: Mode = "isolated",
        n_queries: int | None = None,
        n_keys: int | None = None,
        apply_pruning: bool = True,
        window: int | None = None,
    ) -> Bool[Tensor, "query_pos key_pos"]:
        """Which (query, key) pairs a forward over physical ``[n_keys - n_queries, n_keys)`` must not attend.

        Causal over the physical order; in ``"isolated"`` mode a token also cannot see the other
        siblings of its own step; a token pruned after step p is hidden from queries of steps > p.
        ``window`` (a sliding-attention layer's): a query at physical index i also cannot see a key at
        j <= i - window, the physical-distance rule of ``docs/definitions.md``. A query always keeps its own key.
        """
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}; use 'isolated' or 'visible'")
        n_keys = len(self) if n_keys is None else n_keys
        n_queries = n_keys if n_queries is None else n_queries
        steps = self.steps_tensor()[:n_keys]
        query_index = torch.arange(n_keys - n_queries, n_keys)
        key_index = torch.arange(n_keys)
        blocked = key_index[None, :] > query_index[:, None]
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, int) or window < 1:
                raise InvalidInputError(f"window must be a positive number of tokens or None, got {window!r}")
            blocked |= key_index[None, :] <= query_index[:, None] - window
        query_steps = steps[query_index]
        if mode == "isolated":
            same_step = (query_steps[:, None] == steps[None, :]) & (query_steps[:, None] >= 0)
            blocked |= same_step
        if apply_pruning:
            blocked |= self.hidden_tensor(query_steps[:, None])[:, :n_keys]
        blocked[torch.arange(n_queries), query_index] = False
        return blocked

    def additive_mask(
        self, mode: Mode = "isolated", dtype: torch.dtype = torch.float32, **kwargs
    ) -> Float[Tensor, "query_pos key_pos"]:
        """The same mask as 0 / -inf, ready to add to attention scores (and for HF's 4D float mask)."""
        blocked = self.blocked(mode, **kwargs)
        return torch.zeros(blocked.shape, dtype=dtype).masked_fill(blocked, float("-inf"))

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "token_ids": list(self.token_ids),
            "steps": list(self.steps),
            "logical_positions": list(self.logical_positions),
            "probs": [None if p != p else p for p in self.probs],
            "pruned_at": list(self.pruned_at),
            "prune_scores": [None if p != p else p for p in self.prune_scores],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TokenLayout:
        if not isinstance(data, dict):
            raise InvalidInputError(f"a layout is a table like TokenLayout.to_dict() gives, got {type(data).__name__}")
        missing = [k for k in COLUMNS if k not in data]
        if missing:
            raise InvalidInputError(f"layout is missing {missing}")
        nan = float("nan")
        layout = cls(
            token_ids=[int(t) for t in data["token_ids"]],
            steps=[int(s) for s in data["steps"]],
            logical_positions=[int(p) for p in data["logical_positions"]],
            probs=[nan if p is None else float(p) for p in data["probs"]],
            pruned_at=[int(p) for p in data["pruned_at"]],
            prune_scores=[nan if p is None else float(p) for p in data["prune_scores"]],
        )
        layout.validate()
        return layout

    def validate(self) -> None:
        """Check the invariants: prompt first, steps contiguous and increasing, positions as TEMPO defines them."""
        n_prompt = self.n_prompt
        if self.steps[:n_prompt] != [PROMPT_STEP] * n_prompt:
            raise InvalidInputError("prompt tokens must come first")
        generated = self.steps[n_prompt:]
        for i, (previous, current) in enumerate(zip([PROMPT_STEP] + generated, generated), start=n_prompt):
            if current not in (previous, previous + 1):
                raise InvalidInputError(f"token {i}: step {current} after step {previous}; steps must be contiguous")
        for i, (s, p) in enumerate(zip(self.steps, self.logical_positions)):
            want = i if s == PROMPT_STEP else n_prompt + s
            if p != want:
                raise InvalidInputError(f"token {i}: logical position {p}, expected {want}")
        for i, at in enumerate(self.pruned_at):
            if at != NOT_PRUNED and not (self.steps[i] < at < max(self.n_steps, 1)):
                raise InvalidInputError(f"token {i}: pruned at step {at}, outside its lifetime")
