"""Attribution patching: the gradient approximation of activation patching, per sibling, from two replays and one backward.

Activation patching (:mod:`.patching`) runs the target replay once per (layer, head) with the source's
activation written in. Attribution patching estimates every one of those effects at once, to first order:
for hook point ``h`` and a sibling at physical position ``p``,

    M(target with h[p] patched) - M(target)  ~=  (a_source[h, p] - a_target[h, p]) . dM/da_target[h, p]

summed over the activation's features (over ``d_head`` of one head for ``hook="z"``). The estimate is linear,
so patching several siblings at once is estimated by the sum of their rows (``total`` in
:func:`attribution_totals`). It is exact for small differences and can be far off for large ones (attention
saturates, norms rescale): check the layers that matter with :func:`~tempo_lens.tools.activation_patching`.

Metrics: :class:`~.patching.LogitDifference`, ``"kl_to_source"`` (its gradient at the target is not zero),
or a callable ``logits[n_tokens, d_vocab] -> 0-dim tensor`` (differentiable). ``"kl_to_target"`` is refused: it
is minimal at the target, so its gradient there is zero and every estimate would be 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from ..backends import Backend, backend_for
from ..errors import InvalidInputError
from ..layout import PROMPT_STEP, TokenLayout
from ..replaying import replay_hooks, replay_positions
from ..siblings import RunSource, Where, output_rows, reader_rows
from .common import Condition, cached_replay
from .patching import HOOK_POINTS, LogitDifference, patch_sites, step_log_probs

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

COLUMNS = ["hook", "layer", "head", "step", "rank", "token", "physical_index", "metric", "attribution"]


def _metric(
    metric: Any, layout: TokenLayout, score_steps: list[int], source: str, source_logits: Tensor
) -> tuple[str, Callable[[Tensor], Tensor]]:
    """(name, differentiable function of a replay's logits) for the metrics attribution patching can take."""
    if isinstance(metric, LogitDifference):
        if metric.a.step != metric.b.step:
            raise InvalidInputError(f"{metric.name}: the two siblings must belong to one step")
        rows, weights = reader_rows(layout, metric.a.step, source)
        ids = (layout.token_ids[metric.a.index(layout)], layout.token_ids[metric.b.index(layout)])

        def difference(logits: Tensor) -> Tensor:
            log_p = step_log_probs(logits, rows, weights)
            return log_p[ids[0]] - log_p[ids[1]]

        return metric.name, difference
    if metric == "kl_to_target":
        raise InvalidInputError(
            "kl_to_target is minimal at the target, so its gradient there is zero; use 'kl_to_source', LogitDifference, "
            "or activation_patching"
        )
    if metric == "kl_to_source":
        readers = [output_rows(layout, s, source) for s in score_steps]
        refs = [step_log_probs(source_logits, rows, weights).detach() for rows, weights in readers]

        def mean_kl(logits: Tensor) -> Tensor:
            kls = [
                (ref.exp() * (ref - step_log_probs(logits, rows, weights))).sum() for ref, (rows, weights) in zip(refs, readers)
            ]
            return torch.stack(kls).mean()

        return "kl_to_source", mean_kl
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    raise InvalidInputError(f"unknown metric {metric!r}; use 'kl_to_source', LogitDifference or a callable returning a tensor")


def _target_gradients(
    backend: Backend, layout: TokenLayout, target: Condition, names: list[str], fn: Callable[[Tensor], Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The target replay's activations at ``names`` and the metric's gradient with respect to each (batch axis dropped)."""
    layout = target.layout(layout)
    hooks = replay_hooks(backend, layout, replay_positions(layout, target.positions), target.mask)
    kept: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable[..., Tensor]:
        def keep(activation: Tensor, hook: Any = None) -> Tensor:
            if not activation.requires_grad:  # nothing upstream needs a gradient: start the graph here
                activation = activation.detach().requires_grad_(True)
            kept[name] = activation
            return activation

        return keep

    tokens = torch.tensor([layout.token_ids], dtype=torch.long, device=backend.device)
    with torch.enable_grad(), backend.model.hooks(fwd_hooks=hooks + [(name, keeper(name)) for name in names]):
        logits = backend.forward(tokens)[0]
        value = fn(logits.float())
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise InvalidInputError("the metric must return a one-element tensor of the logits (differentiable), not a float")
        missing = [n for n in names if n not in kept]
        if missing:
            raise InvalidInputError(f"hook point(s) {missing} did not run in this model's forward")
        grads = torch.autograd.grad(value.reshape(()), [kept[n] for n in names], allow_unused=True)
    out_grads = {n: (g if g is not None else torch.zeros_like(kept[n]))[0].detach() for n, g in zip(names, grads)}
    return {n: kept[n][0].detach() for n in names}, out_grads


def attribution_patching(
    model: TransformerBridge,
    run: RunSource,
    where: Where | Sequence[Where] | str,
    *,
    source: Condition = Condition("isolated"),
    target: Condition = Condition("visible"),
    hook: str = "resid_post",
    layers: Sequence[int] | None = None,
    metric: Any = "kl_to_source",
    score_steps: Sequence[int] | None = None,
    next_token_source: str | None = None,
) -> pd.DataFrame:
    """Estimate :func:`~tempo_lens.tools.activation_patching` of each sibling of ``where``, every layer (and head) at once.

    Arguments as for ``activation_patching``. One row per (layer, head, sibling): ``attribution`` estimates the
    metric's change when that sibling's ``hook`` activation is patched from ``source`` into ``target`` (-1 in
    ``head`` unless ``hook="z"``, which gives every head). Two replays and one backward, whatever the number of
    layers, heads and siblings.
    """
    if hook not in HOOK_POINTS:
        raise InvalidInputError(f"unknown hook {hook!r}; use one of {', '.join(HOOK_POINTS)}")
    view, positions, chosen_layers = patch_sites(model, run, source, target, where, layers)
    layout = view.layout
    names = [HOOK_POINTS[hook].format(layer=l) for l in chosen_layers]
    scored = sorted({layout.steps[i] for i in positions}) if score_steps is None else [int(s) for s in score_steps]
    if any(not PROMPT_STEP <= s < layout.n_steps for s in scored) or (metric == "kl_to_source" and not scored):
        raise InvalidInputError(f"score_steps {scored} must name steps of this run (steps -1..{layout.n_steps - 1})")
    backend = backend_for(model)
    src = cached_replay(backend, layout, source, names)
    name, fn = _metric(metric, layout, scored, next_token_source or view.next_token_source, src.logits.float())
    acts, grads = _target_gradients(backend, layout, target, names, fn)
    records = []
    for layer, hook_name in zip(chosen_layers, names):
        delta = src.cache[hook_name].to(grads[hook_name].device).float() - acts[hook_name].float()
        effect = delta * grads[hook_name].float()  # [n_tokens, d] or [n_tokens, head_index, d_head]
        per_head = effect.sum(-1) if hook == "z" else effect.flatten(1).sum(-1, keepdim=True)
        for p in positions:
            sibling = view.sibling(p)
            for head in range(per_head.shape[1]):
                records.append(
                    (
                        hook,
                        layer,
                        head if hook == "z" else -1,
                        sibling.step,
                        sibling.rank,
                        sibling.token,
                        p,
                        name,
                        float(per_head[p, head]),
                    )
                )
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def attribution_totals(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (hook, layer, head): the sum over the frame's siblings, the estimate of patching them all at once."""
    return (
        frame.groupby(["hook", "layer", "head", "metric"], as_index=False)
        .attribution.sum()
        .rename(columns={"attribution": "total"})
    )
