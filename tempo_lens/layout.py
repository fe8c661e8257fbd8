"""The token layout: the one data structure every stage of tempo_lens reads.

A TEMPO sequence is stored physically in the order tokens were appended, but several tokens (the
*siblings* of one step) share one *logical* position. :class:`TokenLayout` maps each physical index
to its step (-1 for the prompt), logical position, selection probability and pruned state, and
derives everything else from that: which tokens are parallel, a step's physical range, the attention
mask of any forward pass. Hooks, generation, capture, analysis and the report all read it; none of
them recomputes these facts another way.

The layout is the one mutable object a generation updates (:meth:`append_step`, :meth:`prune`,
:meth:`truncate`); ``version`` increases on every change so readers can memoise derived tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

PROMPT_STEP = -1
NOT_PRUNED = -1
Mode = Literal["isolated", "visible"]
MODES: tuple[str, ...] = ("isolated", "visible")


@dataclass
class TokenLayout:
    """Physical index -> (token id, step, logical position, probability, pruned-at step, prune score)."""

    token_ids: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    logical_positions: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    pruned_at: list[int] = field(default_factory=list)
    prune_scores: list[float] = field(default_factory=list)
    version: int = 0

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_prompt(cls, token_ids: Sequence[int]) -> "TokenLayout":
        """A layout holding only the prompt at physical = logical positions 0..P-1."""
        layout = cls()
        n = len(token_ids)
        layout.token_ids = [int(t) for t in token_ids]
        layout.steps = [PROMPT_STEP] * n
        layout.logical_positions = list(range(n))
        layout.probs = [float("nan")] * n
        layout.pruned_at = [NOT_PRUNED] * n
        layout.prune_scores = [float("nan")] * n
        return layout

    def append_step(self, token_ids: Sequence[int], probs: Sequence[float]) -> range:
        """Append one step's siblings (highest probability first) at the next logical position."""
        if len(token_ids) == 0 or len(token_ids) != len(probs):
            raise ValueError("a step needs at least one token and one probability per token")
        step = self.n_steps
        position = self.next_logical_position
        start = len(self)
        for token, prob in zip(token_ids, probs):
            self.token_ids.append(int(token))
            self.steps.append(step)
            self.logical_positions.append(position)
            self.probs.append(float(prob))
            self.pruned_at.append(NOT_PRUNED)
            self.prune_scores.append(float("nan"))
        self.version += 1
        return range(start, len(self))

    def prune(self, physical: Iterable[int], at_step: int, score: float) -> None:
        """Mark tokens as pruned after ``at_step``'s forward: queries of later steps no longer see them."""
        physical = list(physical)
        if not 0 <= at_step < self.n_steps:
            raise ValueError(f"cannot prune at step {at_step}: the layout has steps 0..{self.n_steps - 1}")
        for index in physical:  # check everything first: a refused decision changes nothing
            if self.pruned_at[index] != NOT_PRUNED:
                raise ValueError(f"token {index} was already pruned at step {self.pruned_at[index]}")
            if self.steps[index] >= at_step:
                raise ValueError(f"token {index} of step {self.steps[index]} cannot be pruned at step {at_step}")
        if len(set(physical)) != len(physical):
            raise ValueError(f"a token is listed twice in {physical}")
        for index in physical:
            self.pruned_at[index] = at_step
            self.prune_scores[index] = float(score)
        self.version += 1

    def truncate(self, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` tokens, as if the later steps had never been appended.

        Pruning decided at a removed step is undone too. ``n_tokens`` must end a step (or lie in the
        prompt), so no step loses only some of its siblings. A change bumps ``version``, so memoised
        tensors (position and mask hooks) are rebuilt; truncating to the current length changes nothing.
        """
        if not 0 <= n_tokens <= len(self):
            raise ValueError(f"cannot truncate to {n_tokens} tokens: the layout has {len(self)}")
        if 0 < n_tokens < len(self) and self.steps[n_tokens] >= 0 and self.steps[n_tokens] == self.steps[n_tokens - 1]:
            raise ValueError(f"cannot truncate to {n_tokens} tokens: that splits step {self.steps[n_tokens]}; cut at a step boundary")
        if n_tokens == len(self):
            return
        for column in (self.token_ids, self.steps, self.logical_positions, self.probs, self.pruned_at, self.prune_scores):
            del column[n_tokens:]
        n_steps = self.n_steps
        for index, at in enumerate(self.pruned_at):
            if at != NOT_PRUNED and at >= n_steps:
                self.pruned_at[index] = NOT_PRUNED
                self.prune_scores[index] = float("nan")
        self.version += 1

    # ---- basic facts --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.token_ids)

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
            raise IndexError(f"no step {step} (the layout has {self.n_steps} steps)")
        return range(indices[0], indices[-1] + 1)

    def physical_index(self, step: int, rank: int) -> int:
        """The physical index of sibling ``rank`` (0 = most likely) of ``step``; step -1 indexes the prompt."""
        r = range(self.n_prompt) if step == PROMPT_STEP else self.step_range(step)
        if not 0 <= rank < len(r):
            raise IndexError(f"step {step} has {len(r)} token(s); no rank {rank}")
        return r.start + rank

    def rank_of(self, index: int) -> int:
        """A token's rank among its step's siblings (its prompt index for a prompt token)."""
        step = self.steps[index]
        return index - (0 if step == PROMPT_STEP else self.step_range(step).start)

    def unpruned(self) -> "TokenLayout":
        """A copy with every pruning decision undone (the same tokens, nothing hidden)."""
        copy = TokenLayout.from_dict(self.to_dict())
        copy.pruned_at = [NOT_PRUNED] * len(copy)
        copy.prune_scores = [float("nan")] * len(copy)
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
    def positions(self, kind: Literal["shared", "unique"] = "shared") -> Float[Tensor, "n_tokens"]:
        """Logical positions (``"shared"``: siblings share one) or physical indices (``"unique"``)."""
        if kind == "shared":
            return torch.tensor(self.logical_positions, dtype=torch.float32)
        if kind == "unique":
            return torch.arange(len(self), dtype=torch.float32)
        raise ValueError(f"unknown positions {kind!r}; use 'shared', 'unique' or a tensor")

    def steps_tensor(self) -> Int[Tensor, "n_tokens"]:
        return torch.tensor(self.steps, dtype=torch.long)

    def pruned_at_tensor(self) -> Int[Tensor, "n_tokens"]:
        return torch.tensor(self.pruned_at, dtype=torch.long)

    def parallel_tensor(self) -> Bool[Tensor, "n_tokens"]:
        sizes = self.step_sizes()
        return torch.tensor([s >= 0 and sizes[s] >= 2 for s in self.steps], dtype=torch.bool)

    def hidden_tensor(self, step: int | Int[Tensor, "*steps 1"]) -> Bool[Tensor, "*steps n_tokens"]:
        """:meth:`is_hidden` for every token; ``step`` may be a column of query steps (one row each)."""
        pruned_at = self.pruned_at_tensor()
        return (pruned_at != NOT_PRUNED) & (pruned_at < step)

    def blocked(
        self,
        mode: Mode = "isolated",
        n_queries: int | None = None,
        n_keys: int | None = None,
        apply_pruning: bool = True,
    ) -> Bool[Tensor, "query key"]:
        """Which (query, key) pairs a forward over physical ``[n_keys - n_queries, n_keys)`` must not attend.

        Causal over the physical order; in ``"isolated"`` mode a token also cannot see the other
        siblings of its own step; a token pruned after step p is hidden from queries of steps > p.
        A query always keeps its own key.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use 'isolated' or 'visible'")
        n_keys = len(self) if n_keys is None else n_keys
        n_queries = n_keys if n_queries is None else n_queries
        steps = self.steps_tensor()[:n_keys]
        query_index = torch.arange(n_keys - n_queries, n_keys)
        key_index = torch.arange(n_keys)
        blocked = key_index[None, :] > query_index[:, None]
        query_steps = steps[query_index]
        if mode == "isolated":
            same_step = (query_steps[:, None] == steps[None, :]) & (query_steps[:, None] >= 0)
            blocked |= same_step
        if apply_pruning:
            blocked |= self.hidden_tensor(query_steps[:, None])[:, :n_keys]
        blocked[torch.arange(n_queries), query_index] = False
        return blocked

    def additive_mask(self, mode: Mode = "isolated", dtype: torch.dtype = torch.float32, **kwargs) -> Float[Tensor, "query key"]:
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
    def from_dict(cls, data: dict) -> "TokenLayout":
        keys = ("token_ids", "steps", "logical_positions", "probs", "pruned_at", "prune_scores")
        missing = [k for k in keys if k not in data]
        if missing:
            raise KeyError(f"layout is missing {missing}")
        lengths = {k: len(data[k]) for k in keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"layout columns differ in length: {lengths}")
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
            raise ValueError("prompt tokens must come first")
        generated = self.steps[n_prompt:]
        for i, (previous, current) in enumerate(zip([PROMPT_STEP] + generated, generated), start=n_prompt):
            if current not in (previous, previous + 1):
                raise ValueError(f"token {i}: step {current} after step {previous}; steps must be contiguous")
        for i, (s, p) in enumerate(zip(self.steps, self.logical_positions)):
            want = i if s == PROMPT_STEP else n_prompt + s
            if p != want:
                raise ValueError(f"token {i}: logical position {p}, expected {want}")
        for i, at in enumerate(self.pruned_at):
            if at != NOT_PRUNED and not (self.steps[i] < at < max(self.n_steps, 1)):
                raise ValueError(f"token {i}: pruned at step {at}, outside its lifetime")
