"""What the sibling tools share: a replay condition, and one cached replay per condition.

A :class:`Condition` says how a run's tokens are replayed (mask, positions, whether its pruning
applies); the typical comparisons are two conditions over the same tokens: isolated vs visible,
shared vs unique positions, pruned vs unpruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..backends import Backend
from ..capture import resolve_layers
from ..errors import InvalidInputError
from ..layout import TokenLayout
from ..replaying import (  # noqa: F401 - Condition, check_condition: the tools' names for the replay conditions
    Condition,
    MaskArg,
    PositionsArg,
    ReplayResult,
    check_condition,
    default_condition,
    explicit_replay,
    replay_activations,
    replay_hooks,
    replay_on,
    replay_positions,
)
from ..validation import check_token_ids

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def cached_replay(
    backend: Backend,
    layout: TokenLayout,
    condition: Condition,
    names: Sequence[str] = (),
    extra_hooks: Sequence[tuple[str, Any]] | None = None,
) -> ReplayResult:
    """One teacher-forced replay under ``condition`` keeping only the hook points ``names`` (batch axis dropped).

    On a model without hook points (nnsight) the names are read from the modules inside one trace
    (:mod:`tempo_lens.backends.nnsight.activations`); names without a module value are refused there.
    """
    if not backend.uses_hook_points:
        return replay_activations(
            backend, condition.layout(layout), condition.positions, condition.mask, names, extra_hooks or ()
        )
    missing = [n for n in names if n not in backend.model.hook_dict]
    if missing:
        raise InvalidInputError(f"this model has no hook point(s) {missing}; list them with sorted(model.hook_dict)")
    wanted = set(names)
    result = replay_on(
        backend,
        condition.layout(layout),
        condition.positions,
        condition.mask,
        layers=[],
        run_with_cache=bool(wanted),
        names_filter=lambda name: name in wanted,
        extra_hooks=extra_hooks,
    )
    if result.cache is not None:
        result.cache = {name: result.cache[name][0].detach() for name in names}
    return result


def batched_logits(
    backend: Backend, layout: TokenLayout, condition: Condition, batch: int, extra_hooks: Sequence[tuple[str, Any]]
) -> Float[Tensor, "batch n_tokens d_vocab"]:
    """``batch`` copies of the replay under ``condition`` in one forward, for hooks that patch each copy differently.

    The same positions and mask hooks as :func:`~tempo_lens.replay`; copy ``b`` alone gives replay's logits.
    """
    layout = condition.layout(layout)

    check_token_ids(backend.model, layout.token_ids)
    positions = replay_positions(layout, condition.positions)
    if not backend.uses_hook_points:  # the hooks become edits of the named activations inside one trace
        logits, _ = explicit_replay(backend, layout, positions, condition.mask, [], edits=list(extra_hooks), copies=batch)
        return logits.detach().cpu()
    hooks = replay_hooks(backend, layout, positions, condition.mask)
    tokens = torch.tensor([layout.token_ids] * batch, dtype=torch.long, device=backend.device)
    with torch.no_grad(), backend.model.hooks(fwd_hooks=hooks + list(extra_hooks)):
        return backend.forward(tokens).detach().cpu()


def check_steps(layout: TokenLayout, steps: Sequence[int] | None) -> list[int]:
    """The chosen steps (default all), each checked against the layout."""
    if steps is not None and (
        isinstance(steps, (str, bytes))
        or not isinstance(steps, Iterable)
        or not all(hasattr(s, "__index__") and not isinstance(s, bool) for s in steps)
    ):
        raise InvalidInputError(f"steps must be a list of step numbers, got {steps!r}")
    chosen = list(range(layout.n_steps)) if steps is None else [int(s) for s in steps]
    bad = [s for s in chosen if not 0 <= s < layout.n_steps]
    if bad or not chosen:
        raise InvalidInputError(f"steps {bad or chosen} are not in this run (steps 0..{layout.n_steps - 1})")
    return chosen


def check_layers(model: TransformerBridge, layers: Sequence[int] | None) -> list[int]:
    """The chosen layers (default all; negative counts from the last), by the one rule of :func:`~tempo_lens.capture.resolve_layers`."""
    chosen = resolve_layers(layers, int(model.cfg.n_layers), "layers")
    if not chosen:
        raise InvalidInputError("layers is empty; choose layers of this model, or leave it out for all")
    return chosen


def mix_log_probs(log_probs: Float[Tensor, "row d_vocab"], weights: Sequence[float]) -> Float[Tensor, " d_vocab"]:
    """``log sum_r w_r p_r``: the log of the weighted mixture of the rows' distributions (TEMPO's "mixture")."""
    log_w = torch.tensor(weights, dtype=log_probs.dtype, device=log_probs.device).log()
    return torch.logsumexp(log_probs + log_w[:, None], dim=0)


def kl_divergence(log_p: Float[Tensor, " d_vocab"], log_q: Float[Tensor, " d_vocab"]) -> float:
    """``KL(p || q)`` in nats from log probabilities (clamped at 0 against rounding)."""
    return max(float((log_p.exp() * (log_p - log_q)).sum()), 0.0)
