"""Heatmap views of captured runs: attention entropy (layer × step) and every head of one step.

- :func:`entropy_heatmap`: one panel per run, layers down, steps across, a shared colour scale,
  instead of one entropy line per step.
- :func:`head_grid`: every layer × head of one step as a tile ``[query sibling, key]`` in one
  image, like a CircuitsVis head view; attention to parallel keys is drawn in orange, the rest in
  blue, so heads that read the siblings stand out.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots

from ..analysis._arrays import step_attention
from ..analysis.captured import as_captured
from ..analysis.entropy import entropy_by_step
from ..analysis.labels import key_labels
from ..text import visible_token


def entropy_heatmap(*runs: Any, title: str = "Attention entropy (nats) per layer and step") -> go.Figure:
    """Layer × step entropy of each run side by side (CapturedRun or GenerationResult with capture)."""
    if not runs:
        raise ValueError("entropy_heatmap needs at least one run")
    table = pd.concat([entropy_by_step(as_captured(r)) for r in runs], ignore_index=True)
    return entropy_heatmap_from_table(table, title=title)


def entropy_heatmap_from_table(table: pd.DataFrame, title: str = "Attention entropy (nats) per layer and step") -> go.Figure:
    """The same figure from a long table (run, mode, step, layer, entropy), e.g. :func:`entropy_by_step`'s."""
    values = table["entropy"].dropna().to_numpy(dtype=float)
    zmin, zmax = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    runs = list(dict.fromkeys(zip(table["run"], table["mode"])))
    fig = make_subplots(
        rows=1,
        cols=max(1, len(runs)),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[f"{html.escape(str(name))} ({mode})" for name, mode in runs],
    )
    for col, (name, mode) in enumerate(runs, start=1):
        part = table[(table["run"] == name) & (table["mode"] == mode)].pivot(index="layer", columns="step", values="entropy")
        fig.add_trace(
            go.Heatmap(
                z=part.to_numpy(dtype=float),
                x=list(part.columns),
                y=list(part.index),
                zmin=zmin,
                zmax=zmax,
                colorscale="Viridis",
                showscale=col == len(runs),
                colorbar=dict(title="nats"),
                name=str(name),
                hovertemplate="step %{x}, layer %{y}<br>entropy %{z:.3f} nats<extra>" + html.escape(str(name)) + "</extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="step", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)
    fig.update_layout(title=title, height=max(320, 16 * table["layer"].nunique() + 160))
    return fig


def tile_attention(attention: Float[np.ndarray, "layer head query key"], gap: int = 1) -> Float[np.ndarray, "rows cols"]:
    """Tiles ``[query, key]`` laid out layer by row, head by column, with NaN gaps between them."""
    n_layers, n_heads, n_q, n_k = attention.shape
    grid = np.full((n_layers * (n_q + gap) - gap, n_heads * (n_k + gap) - gap), np.nan)
    for l in range(n_layers):
        for h in range(n_heads):
            grid[l * (n_q + gap) : l * (n_q + gap) + n_q, h * (n_k + gap) : h * (n_k + gap) + n_k] = attention[l, h]
    return grid


def head_grid(run: Any, step: int, *, zmax: float | None = None, title: str | None = None) -> go.Figure:
    """Every captured layer × head of ``step``: query siblings × keys per tile, parallel keys in orange.

    ``zmax`` caps the colour scale (default: the largest weight on any key but the first, so an
    attention sink on token 0 does not wash out the rest); hover gives the exact weight.
    """
    run = as_captured(run)
    a, siblings = step_attention(run.step_array(step), run.layout, step)
    attention = a.mean(axis=1)  # [layer, head, query, key] (batch 1)
    n_layers, n_heads, n_q, n_k = attention.shape
    parallel = run.layout.parallel_tensor().numpy()[:n_k]
    grid = tile_attention(attention)
    is_parallel = tile_attention(np.broadcast_to(parallel, attention.shape).astype(float)) == 1
    if zmax is None:
        zmax = float(attention[..., 1:].max()) if n_k > 1 else 1.0
    labels = key_labels(run.layout, run.token_strings, step, n_k)
    queries = [f"s{step}.{r} {html.escape(visible_token(run.token_strings[i]))}" for r, i in enumerate(siblings)]

    def cell(r: int, c: int) -> str:
        (l, q), (h, k) = divmod(r, n_q + 1), divmod(c, n_k + 1)
        return "" if q == n_q or k == n_k else f"L{run.layers[l]} H{h}<br>query {queries[q]}<br>key {labels[k]}"

    hover = [[cell(r, c) for c in range(grid.shape[1])] for r in range(grid.shape[0])]
    fig = go.Figure()
    for name, chosen, scale in (("other keys", ~is_parallel, "Blues"), ("parallel keys", is_parallel, "Oranges")):
        fig.add_trace(
            go.Heatmap(
                z=np.where(chosen, grid, np.nan),
                zmin=0,
                zmax=zmax,
                colorscale=scale,
                name=name,
                text=hover,
                hovertemplate="%{text}<br>attention %{z:.4f}<extra>" + name + "</extra>",
                hoverongaps=False,
                colorbar=dict(
                    title=name, x=1.0 if name == "other keys" else 1.08, len=0.45, y=0.75 if name == "other keys" else 0.25
                ),
            )
        )
    fig.update_layout(
        title=title or f"{html.escape(run.name)} ({run.mode}), step {step}: every head (orange: parallel keys)",
        xaxis=dict(
            tickmode="array",
            tickvals=[h * (n_k + 1) + (n_k - 1) / 2 for h in range(n_heads)],
            ticktext=[f"H{h}" for h in range(n_heads)],
            showgrid=False,
            title="head (keys left to right)",
        ),
        yaxis=dict(
            tickmode="array",
            tickvals=[l * (n_q + 1) + (n_q - 1) / 2 for l in range(n_layers)],
            ticktext=[f"L{l}" for l in run.layers],
            autorange="reversed",
            showgrid=False,
            title="layer (query siblings top to bottom)",
        ),
        height=max(400, 12 * grid.shape[0] + 160),
        plot_bgcolor="white",
    )
    return fig
