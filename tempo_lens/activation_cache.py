"""Any hook point's value for every token of a TEMPO run, indexed by physical position or by sibling.

``generate(..., names_filter=...)`` records the chosen hook points at every forward of the generation
(:class:`ActivationRecorder`, which reads :func:`~tempo_lens.hook_context.current_step` to know
which tokens each forward holds); ``result.run_with_cache(model, ...)`` computes the same from a
teacher-forced replay (:func:`replay_cache`). Both give a :class:`TokenCache`: ``cache[name][i]`` is
physical token ``i``'s value.

Shapes (``n`` tokens in the layout):

- a hook point whose activation is ``[batch, pos, ...]``: ``[n, ...]``. The rows of a forward's new tokens
  are kept; a HookedTransformer's ``hook_rot_k`` (``[batch, K, head, d_head]``, every key re-rotated) keeps
  the rows of the new keys.
- ``hook_pattern`` and ``hook_attn_scores`` (``[batch, head, query_pos, key_pos]``): ``[n, head_index, n]``, query
  token first. During generation a token's forward had no key past its step; those entries are NaN (a
  replay has them: 0 in the pattern, the causal mask's value in the scores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from .errors import InvalidInputError
from .hook_context import RowInForward, current_step
from .layout import TokenLayout
from .replaying import default_condition, replay
from .siblings import Sibling, physical_indices, run_view

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
ATTENTION_HOOKS = ("hook_pattern", "hook_attn_scores")  # [batch, head, query_pos, key_pos]


def is_attention_shaped(name: str) -> bool:
    return name.endswith(ATTENTION_HOOKS)


def resolve_names(model: TransformerBridge, names_filter: NamesFilter) -> list[str]:
    """The hook points ``names_filter`` names, TransformerLens's way: one name, a list of names, or a predicate."""
    if names_filter is None:
        return []
    available = list(model.hook_dict)
    if isinstance(names_filter, str):
        wanted = [names_filter]
    elif callable(names_filter):
        wanted = [name for name in available if names_filter(name)]
    elif isinstance(names_filter, Sequence) and all(isinstance(n, str) for n in names_filter):
        wanted = list(dict.fromkeys(names_filter))
    else:
        raise InvalidInputError(f"names_filter must be a hook name, a list of hook names or a predicate, got {names_filter!r}")
    missing = [n for n in wanted if n not in model.hook_dict]
    if missing:
        raise InvalidInputError(f"this model has no hook point(s) {missing}; list them with sorted(model.hook_dict)")
    if not wanted:
        raise InvalidInputError("names_filter matches no hook point of this model; list them with sorted(model.hook_dict)")
    return wanted


def _row_part(activation: Tensor, name: str, row: RowInForward, width: int) -> Tensor:
    """``row``'s new tokens' values out of one forward's activation (``width``: the forward's ``pos`` length)."""
    lane = row.lane if activation.shape[0] > 1 else 0  # a [1, ...] activation serves every lane alike
    start, stop = row.queries
    value = activation.detach()[lane]
    if is_attention_shaped(name):
        index = torch.tensor(row.key_columns, dtype=torch.long, device=value.device)
        return value[:, start:stop].index_select(-1, index).transpose(0, 1).to("cpu", copy=True)
    if value.ndim and value.shape[0] == width:
        return value[start:stop].to("cpu", copy=True)
    if value.ndim and value.shape[0] > max(row.key_columns):  # every key of the lane (hook_rot_k of a HookedTransformer)
        new_keys = row.key_columns[len(row.key_columns) - (stop - start) :]
        index = torch.tensor(new_keys, dtype=torch.long, device=value.device)
        return value.index_select(0, index).to("cpu", copy=True)
    raise InvalidInputError(
        f"hook point {name!r} has shape {tuple(activation.shape)}, not [batch, pos, ...] over this forward's {width} "
        "new tokens; read it with result.run_with_cache(model, ...) instead"
    )


class ActivationRecorder:
    """Keeps the chosen hook points' values of every generation row's new tokens, forward by forward."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.parts: dict[int, dict[str, list[Tensor]]] = {}

    def hooks(self) -> list[tuple[str, Callable[..., Tensor]]]:
        def make(name: str) -> Callable[..., Tensor]:
            def record(activation: Tensor, hook: Any = None) -> Tensor:
                context = current_step()
                if context is None or not isinstance(activation, Tensor):
                    return activation
                width = max(r.queries[1] for r in context.rows)
                for row in context.rows:
                    self.parts.setdefault(row.row, {}).setdefault(name, []).append(_row_part(activation, name, row, width))
                return activation

            return record

        return [(name, make(name)) for name in self.names]

    def cache(self, row: int, layout: TokenLayout, token_strings: Sequence[str]) -> TokenCache:
        """Row ``row``'s values of every token, one tensor per hook point that fired (``[n_tokens, ...]``)."""
        n = len(layout)
        values: dict[str, Tensor] = {}
        for name, parts in self.parts.get(row, {}).items():
            if is_attention_shaped(name):
                parts = [
                    torch.nn.functional.pad(
                        p.float() if not p.is_floating_point() else p, (0, n - p.shape[-1]), value=float("nan")
                    )
                    for p in parts
                ]
            value = torch.cat(parts)
            if value.shape[0] != n:
                raise InvalidInputError(
                    f"hook point {name!r} fired for {value.shape[0]} of {n} tokens; it did not run at every forward"
                )
            values[name] = value
        return TokenCache(values, layout, token_strings)


class TokenCache(Mapping[str, Tensor]):
    """Hook point name -> ``[n_tokens, ...]`` values, row ``i`` for physical token ``i``; readable by sibling too.

    ``cache[name]``: every token; ``cache[name, where]``: the rows of ``where`` (a :class:`~tempo_lens.siblings.Sibling`,
    ``(step, rank)`` or a whole step; one sibling gives its row alone); ``cache[sibling]``: every hook point's
    row of that sibling. :meth:`to_dataframe` gives the tidy view.
    """

    def __init__(self, values: Mapping[str, Tensor], layout: TokenLayout, token_strings: Sequence[str]):
        self.values_by_name = dict(values)
        self.layout = layout
        self.token_strings = list(token_strings)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self.values_by_name:
                raise KeyError(f"{key!r} is not in this cache (it holds {sorted(self.values_by_name)}); pass it in names_filter")
            return self.values_by_name[key]
        if isinstance(key, Sibling):
            index = key.index(self.layout)
            return {name: value[index] for name, value in self.values_by_name.items()}
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
            name, where = key
            indices = physical_indices(self.layout, where)
            rows = self[name][indices]
            return rows[0] if isinstance(where, Sibling) or (isinstance(where, tuple) and len(where) == 2) else rows
        raise InvalidInputError(f"index a TokenCache by a hook name, (name, sibling or step) or a Sibling, got {key!r}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.values_by_name)

    def __len__(self) -> int:
        return len(self.values_by_name)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {list(value.shape)}" for name, value in self.values_by_name.items())
        return f"TokenCache({len(self.layout)} tokens; {shapes})"

    def to_dataframe(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per token: physical index, step, sibling (rank), token, parallel, logical position, then one column per hook point (its value as an array)."""
        layout = self.layout
        parallel = layout.parallel_tensor().tolist()
        frame = pd.DataFrame(
            {
                "physical_index": range(len(layout)),
                "step": layout.steps,
                "sibling": [layout.rank_of(i) for i in range(len(layout))],
                "token": self.token_strings,
                "parallel": parallel,
                "logical_position": layout.logical_positions,
            }
        )
        for name in self.values_by_name if names is None else names:
            frame[name] = list(self[name].float().numpy())
        return frame


def replay_cache(model: TransformerBridge, source: Any, names_filter: NamesFilter, condition: Any = None) -> TokenCache:
    """The hook points of ``names_filter`` for every token, from one teacher-forced replay of ``source`` (its own mode,
    shared positions, unless ``condition``, a :class:`~tempo_lens.tools.Condition`, says otherwise)."""
    view = run_view(source, model)
    condition = default_condition(view, condition)
    names = resolve_names(model, names_filter)
    if not names:
        raise InvalidInputError("names_filter is None; name the hook points to cache (a name, a list or a predicate)")
    wanted = set(names)
    layout = condition.layout(view.layout)
    result = replay(
        model,
        layout,
        condition.positions,
        condition.mask,
        layers=[],
        run_with_cache=True,
        names_filter=lambda name: name in wanted,
    )
    values = {}
    for name in names:
        if name in result.cache:
            value = result.cache[name][0].detach().cpu()
            values[name] = value.transpose(0, 1) if is_attention_shaped(name) else value
    return TokenCache(values, layout, view.token_strings)
