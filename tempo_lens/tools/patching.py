"""Activation patching across replays of the same tokens: where does a condition change what a sibling predicts?

The *source* and *target* are two :class:`~tempo_lens.tools.Condition` replays of one run's tokens
(isolated into visible, shared positions into unique, unpruned into pruned). For each layer (and
head), the target replay runs with the chosen hook point of the chosen siblings overwritten by the
source replay's activation there, and a metric reads the patched output:

- ``"kl_to_source"`` (default): ``KL(P_source || P_patched)``, 0 when the patch restores the source;
- ``"kl_to_target"``: ``KL(P_target || P_patched)``, how far the patch moves the target;
- :class:`LogitDifference` ``(a, b)``: ``log P(a) - log P(b)`` for two siblings of one step under the
  distribution that chose them (the logit difference itself when one row reads);
- any callable ``logits[n_tokens, d_vocab] -> float``.

The KL metrics average over ``score_steps`` (default: the steps of the patched siblings) the KL of
each step's next-token distribution (its siblings' rows combined by the run's next-token source).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from ..backends import Backend, backend_for
from ..errors import InvalidInputError
from ..figures.charts import layer_head_heatmap
from ..generation import check_int
from ..layout import PROMPT_STEP, TokenLayout
from ..siblings import RunSource, RunView, Sibling, Where, output_rows, physical_indices, reader_rows, run_view
from .common import Condition, batched_logits, cached_replay, check_condition, check_layers, kl_divergence, mix_log_probs

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HOOK_POINTS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",  # [batch, pos, d_model]
    "resid_post": "blocks.{layer}.hook_resid_post",  # [batch, pos, d_model]
    "attn_out": "blocks.{layer}.hook_attn_out",  # [batch, pos, d_model]
    "mlp_out": "blocks.{layer}.hook_mlp_out",  # [batch, pos, d_model]
    "z": "blocks.{layer}.attn.hook_z",  # [batch, pos, head_index, d_head]: one head at a time
}
COLUMNS = ["hook", "layer", "head", "metric", "value", "source_value", "target_value", "restored"]


@dataclass(frozen=True)
class LogitDifference:
    """``log P(a) - log P(b)`` for siblings ``a`` and ``b`` of one step, read where that step was chosen."""

    a: Sibling
    b: Sibling

    @property
    def name(self) -> str:
        return f"logit diff {self.a.label} - {self.b.label}"


Metric = str | LogitDifference | Callable[[Tensor], float]


def step_log_probs(logits: Float[Tensor, "n_tokens d_vocab"], rows: list[int], weights: list[float]) -> Float[Tensor, " d_vocab"]:
    return mix_log_probs(torch.log_softmax(logits[rows].float(), dim=-1), weights)


def metric_fn(
    metric: Metric, layout: TokenLayout, score_steps: list[int], source: str, source_logits: Tensor, target_logits: Tensor
) -> tuple[str, Callable[[Tensor], float]]:
    """(name, function of a replay's logits) for a metric given by name, record or callable."""
    if isinstance(metric, LogitDifference):
        if metric.a.step != metric.b.step:
            raise InvalidInputError(f"{metric.name}: the two siblings must belong to one step")
        rows, weights = reader_rows(layout, metric.a.step, source)
        a, b = metric.a.index(layout), metric.b.index(layout)
        ids = (layout.token_ids[a], layout.token_ids[b])

        def difference(logits: Tensor) -> float:
            log_p = step_log_probs(logits, rows, weights)
            return float(log_p[ids[0]] - log_p[ids[1]])

        return metric.name, difference
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric not in ("kl_to_source", "kl_to_target"):
        raise InvalidInputError(f"unknown metric {metric!r}; use 'kl_to_source', 'kl_to_target', LogitDifference or a callable")
    reference = source_logits if metric == "kl_to_source" else target_logits
    readers = [output_rows(layout, s, source) for s in score_steps]
    ref = [step_log_probs(reference, rows, weights) for rows, weights in readers]

    def mean_kl(logits: Tensor) -> float:
        kls = [kl_divergence(r, step_log_probs(logits, rows, weights)) for r, (rows, weights) in zip(ref, readers)]
        return sum(kls) / len(kls)

    return metric, mean_kl


def patch_hook(source_activation: Tensor, positions: list[int], copies: dict[int, int | None]) -> Callable[..., Tensor]:
    """A hook writing the source's activation at ``positions`` into batch copies of the target.

    ``copies`` maps a batch row to the head it patches (``hook_z``) or None (the whole activation).
    """
    index = torch.tensor(positions, dtype=torch.long)

    def hook(activation: Tensor, hook: Any = None) -> Tensor:
        patched = activation.clone()
        source = source_activation.to(activation.device, activation.dtype)
        for row, head in copies.items():
            if head is None:
                patched[row, index] = source[index]
            else:
                patched[row, index, head] = source[index, head]
        return patched

    return hook


def patched_logits(
    backend: Backend,
    layout: TokenLayout,
    target: Condition,
    variants: list[tuple[str, int | None]],
    source_cache: dict[str, Tensor],
    positions: list[int],
    batch_size: int,
) -> list[Tensor]:
    """The target's logits with each (hook name, head) variant patched, ``batch_size`` variants per forward."""
    out: list[Tensor] = []
    for start in range(0, len(variants), batch_size):
        chunk = variants[start : start + batch_size]
        by_hook: dict[str, dict[int, int | None]] = {}
        for row, (name, head) in enumerate(chunk):
            by_hook.setdefault(name, {})[row] = head
        hooks = [(name, patch_hook(source_cache[name], positions, copies)) for name, copies in by_hook.items()]
        out += list(batched_logits(backend, layout, target, len(chunk), hooks).unbind(0))
    return out


def patch_sites(model: Any, run: Any, source: Any, target: Any, where: Any, layers: Any) -> tuple[RunView, list[int], list[int]]:
    """The run's view, the physical positions ``where`` names and the checked layers, for activation and attribution
    patching alike: the two conditions must be :class:`Condition` s replaying the same tokens."""
    source, target = check_condition(source, "source"), check_condition(target, "target")
    view = run_view(run, model)
    layout = view.layout
    if source.layout(layout).token_ids != target.layout(layout).token_ids:
        raise InvalidInputError("source and target must replay the same tokens")
    if isinstance(where, str):
        if where != "all":
            raise InvalidInputError(f'where must be siblings, steps or "all", got {where!r}')
        positions = list(range(len(layout)))
    else:
        positions = physical_indices(layout, where)
    if not positions:
        raise InvalidInputError('where selects no token to patch; name siblings, steps or "all"')
    return view, positions, check_layers(model, layers)


def activation_patching(
    model: TransformerBridge,
    run: RunSource,
    where: Where | Sequence[Where] | str,
    *,
    source: Condition = Condition("isolated"),
    target: Condition = Condition("visible"),
    hook: str = "resid_post",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    metric: Metric = "kl_to_source",
    score_steps: Sequence[int] | None = None,
    next_token_source: str | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Patch ``hook`` at ``where`` from the ``source`` replay into the ``target`` replay, layer by layer (and head by head).

    ``where``: siblings (:class:`~tempo_lens.siblings.Sibling` or ``(step, rank)``), whole steps
    (ints; -1 is the prompt) or ``"all"``. ``hook``: one of :data:`HOOK_POINTS`; ``"z"`` patches one
    head's ``hook_z`` at a time (``heads``, default all). Returns one row per (layer, head) with the
    metric's value, its value on the unpatched source and target, and ``restored`` =
    ``(value - target_value) / (source_value - target_value)`` (1: the patch gives the source's value).
    ``batch_size`` patched copies run in one forward (lower it if memory is short).
    """
    if hook not in HOOK_POINTS:
        raise InvalidInputError(f"unknown hook {hook!r}; use one of {', '.join(HOOK_POINTS)}")
    if heads is not None and hook != "z":
        raise InvalidInputError(f"heads apply to hook 'z' (one head's hook_z), not to {hook!r}")
    batch_size = check_int(batch_size, "batch_size", 1)
    view, positions, chosen_layers = patch_sites(model, run, source, target, where, layers)
    layout = view.layout
    n_heads = int(model.cfg.n_heads)
    chosen_heads: list[int | None] = [None]
    if hook == "z":
        chosen_heads = list(range(n_heads)) if heads is None else [int(h) for h in heads]
        if not chosen_heads or any(not 0 <= h < n_heads for h in chosen_heads):
            raise InvalidInputError(f"heads {chosen_heads} are not in this model (heads 0..{n_heads - 1})")
    names = [HOOK_POINTS[hook].format(layer=l) for l in chosen_layers]
    backend = backend_for(model)
    src = cached_replay(backend, layout, source, names)
    tgt = cached_replay(backend, layout, target)
    if score_steps is None:
        score_steps = sorted({layout.steps[i] for i in positions})
    if isinstance(score_steps, (str, bytes)) or not all(hasattr(s, "__index__") and not isinstance(s, bool) for s in score_steps):
        raise InvalidInputError(f"score_steps must be a list of step numbers, got {score_steps!r}")
    scored = [int(s) for s in score_steps]
    if not scored and not isinstance(metric, LogitDifference) and not callable(metric):
        raise InvalidInputError("score_steps is empty, so the KL metric would average over nothing; name steps, or leave it out")
    if any(not PROMPT_STEP <= s < layout.n_steps for s in scored):
        raise InvalidInputError(f"score_steps {scored} are not in this run (steps -1..{layout.n_steps - 1})")
    name, fn = metric_fn(metric, layout, scored, next_token_source or view.next_token_source, src.logits, tgt.logits)
    source_value, target_value = fn(src.logits), fn(tgt.logits)
    span = source_value - target_value
    variants = [(layer, hook_name, head) for layer, hook_name in zip(chosen_layers, names) for head in chosen_heads]
    logits = patched_logits(backend, layout, target, [v[1:] for v in variants], src.cache, positions, batch_size)
    records = []
    for (layer, _, head), patched in zip(variants, logits):
        value = fn(patched)
        restored = (value - target_value) / span if abs(span) > 1e-12 else math.nan
        records.append((hook, layer, -1 if head is None else head, name, value, source_value, target_value, restored))
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def patching_figure(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """The sweep: value per layer with the unpatched source and target dashed, or a layer × head heatmap of ``restored``."""
    metric = str(df["metric"].iloc[0])
    title = title or f"Activation patching ({df['hook'].iloc[0]}): {metric}"
    if (df["head"] >= 0).any():
        table = df.pivot(index="layer", columns="head", values="restored")
        fig = go.Figure(
            layer_head_heatmap(
                table,
                colorscale="RdBu",
                zmid=0.0,
                colorbar=dict(title="restored"),
                hovertemplate="layer %{y}, head %{x}<br>restored %{z:.3f}<extra></extra>",
            )
        )
        fig.update_layout(
            title=title + f" (target {df['target_value'].iloc[0]:.4g}, source {df['source_value'].iloc[0]:.4g})",
            xaxis=dict(title="head", dtick=1),
            yaxis=dict(title="layer", dtick=1),
        )
        return fig
    fig = go.Figure(
        go.Scatter(
            x=df["layer"],
            y=df["value"],
            mode="lines+markers",
            name="patched",
            customdata=df["restored"],
            hovertemplate="layer %{x}<br>value %{y:.4f}<br>restored %{customdata:.2f}<extra></extra>",
        )
    )
    for column, label, colour in (("target_value", "target (unpatched)", "#ff7f0e"), ("source_value", "source", "#1f77b4")):
        fig.add_hline(y=float(df[column].iloc[0]), line_dash="dash", line_color=colour, annotation_text=label)
    fig.update_layout(title=title, xaxis=dict(title="layer", dtick=1), yaxis=dict(title=metric))
    return fig
