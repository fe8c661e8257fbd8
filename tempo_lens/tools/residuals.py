"""Residual streams of the same tokens under two replay conditions, compared per layer and sibling.

Both conditions replay one run's tokens (:class:`~tempo_lens.tools.Condition`: isolated vs visible,
shared vs unique positions, pruned vs unpruned). At each layer's hook point (``blocks.L.hook_resid_post``
by default, ``[pos, d_model]``) every chosen sibling's vector ``a`` (condition ``a``) is compared with
its vector ``b`` (condition ``b``): the distance ``|a - b|``, the distance relative to ``|a|``, and the
cosine similarity. The first layer where the relative distance grows says where the condition starts
to matter for that sibling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
import torch

from ..backends import backend_for
from ..errors import InvalidInputError
from ..siblings import RunSource, run_view
from .common import Condition, cached_replay, check_condition, check_layers, check_steps
from .patching import HOOK_POINTS

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

COLUMNS = ["layer", "step", "rank", "physical", "token", "norm_a", "norm_b", "distance", "relative", "cosine"]
RESIDUAL_HOOKS = ("resid_pre", "resid_post", "attn_out", "mlp_out")


def residual_difference(
    model: TransformerBridge,
    run: RunSource,
    a: Condition = Condition("isolated"),
    b: Condition = Condition("visible"),
    *,
    steps: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    hook: str = "resid_post",
) -> pd.DataFrame:
    """One row per (layer, sibling of ``steps``): how far condition ``b`` moves the sibling's ``hook`` vector from ``a``'s.

    ``run``: a GenerationResult, CapturedRun or TokenLayout; ``steps`` / ``layers``: default all
    (negative layers count from the last); ``hook``: one of :data:`RESIDUAL_HOOKS`. Columns: layer,
    step, rank, physical, token, norm_a, norm_b, distance (``|a - b|``), relative (``|a - b| / |a|``),
    cosine.
    """
    if hook not in RESIDUAL_HOOKS:
        raise InvalidInputError(f"unknown hook {hook!r}; use one of {', '.join(RESIDUAL_HOOKS)}")
    a, b = check_condition(a, "a"), check_condition(b, "b")
    view = run_view(run, model)
    layout = view.layout
    if a.layout(layout).token_ids != b.layout(layout).token_ids:
        raise InvalidInputError("the two conditions must replay the same tokens")
    chosen_steps, chosen_layers = check_steps(layout, steps), check_layers(model, layers)
    names = [HOOK_POINTS[hook].format(layer=l) for l in chosen_layers]
    backend = backend_for(model)
    cache_a, cache_b = (cached_replay(backend, layout, c, names).cache for c in (a, b))
    siblings = [s for step in chosen_steps for s in view.siblings(step)]
    rows = [s.index(layout) for s in siblings]
    records = []
    for layer, name in zip(chosen_layers, names):
        va, vb = cache_a[name][rows].double(), cache_b[name][rows].double()
        norm_a, norm_b, distance = va.norm(dim=-1), vb.norm(dim=-1), (va - vb).norm(dim=-1)
        relative = distance / norm_a.clamp_min(torch.finfo(torch.float64).tiny)
        cosine = torch.nn.functional.cosine_similarity(va, vb, dim=-1)
        for i, s in enumerate(siblings):
            records.append(
                (
                    layer,
                    s.step,
                    s.rank,
                    rows[i],
                    s.token,
                    float(norm_a[i]),
                    float(norm_b[i]),
                    float(distance[i]),
                    float(relative[i]),
                    float(cosine[i]),
                )
            )
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def residual_figure(df: pd.DataFrame, value: str = "relative", *, title: str | None = None) -> go.Figure:
    """A layer × sibling heatmap of ``value`` (default the relative distance) from :func:`residual_difference`."""
    labels = [f"s{s}.{r} {t!r}" for s, r, t in df[["step", "rank", "token"]].drop_duplicates().itertuples(index=False)]
    table = df.pivot_table(index="layer", columns=["step", "rank"], values=value, sort=True)
    fig = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=labels,
            y=list(table.index),
            colorscale="Viridis",
            colorbar=dict(title=value),
            hovertemplate="%{x}<br>layer %{y}<br>%{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title or f"Residual difference between conditions: {value}",
        xaxis=dict(title="sibling"),
        yaxis=dict(title="layer", dtick=1),
    )
    return fig
