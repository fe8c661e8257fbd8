"""The report's figures of the causal part: per-key attention on a log scale, and heads by their measures.

Drawn from :mod:`tempo_lens.analysis.metrics.causal_schema` records alone (never from experiment files).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..analysis.metrics.causal_schema import HeadMeasures, KeyAttention

KIND_COLOURS = {"parallel": "#d95f02", "matched": "#1b9e77"}


def key_attention_plot(items: list[KeyAttention]) -> go.Figure:
    """Histograms of per-key attention (log10 bins), parallel against matched keys, one mode shown at a time.

    Dashed lines mark each kind's arithmetic mean, dotted lines its geometric mean: a few heavily attended keys
    pull the arithmetic mean up while the geometric mean follows the bulk, so ratios of arithmetic means and the
    regression on log attention can disagree.
    """
    fig = go.Figure()
    modes = list(dict.fromkeys(k.mode for k in items))
    for item in items:
        edges = np.asarray(item.log10_edges)
        centres = 10 ** ((edges[:-1] + edges[1:]) / 2)
        shown = item.mode == modes[0]
        share = np.asarray(item.counts, dtype=float) / max(1, item.n_keys)
        fig.add_bar(
            x=centres,
            y=share,
            width=np.diff(10**edges),
            name=f"{item.kind} keys, {item.mode} (n = {item.n_keys})",
            marker_color=KIND_COLOURS.get(item.kind, "#666666"),
            opacity=0.55,
            visible=True if shown else "legendonly",
            hovertemplate="attention %{x:.2e}<br>share of keys %{y:.3f}<extra></extra>",
        )
        for value, dash, label in ((item.arithmetic_mean, "dash", "arithmetic"), (item.geometric_mean, "dot", "geometric")):
            if value is None:
                continue
            fig.add_scatter(
                x=[value, value],
                y=[0, float(share.max()) if len(share) else 1.0],
                mode="lines",
                line={"dash": dash, "color": KIND_COLOURS.get(item.kind, "#666666"), "width": 2},
                name=f"{item.kind} {label} mean, {item.mode} ({value:.2e})",
                visible=True if shown else "legendonly",
            )
    fig.update_layout(
        barmode="overlay",
        xaxis={"type": "log", "title": "attention to the key (mean over layers, heads and the step's queries; log scale)"},
        yaxis={"title": "share of keys of that kind"},
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 30},
    )
    return fig


def head_measures_plot(measures: HeadMeasures) -> go.Figure:
    """Every (layer, head): mean logical distance against sink share, coloured by entropy (means over runs)."""
    heads = [h for h in measures.heads if None not in (h.distance, h.sink, h.entropy)]
    fig = go.Figure(
        go.Scatter(
            x=[h.distance for h in heads],
            y=[h.sink for h in heads],
            mode="markers",
            marker={"color": [h.entropy for h in heads], "colorscale": "Viridis", "colorbar": {"title": "entropy (nats)"}},
            text=[f"L{h.layer}H{h.head}" for h in heads],
            hovertemplate="%{text}<br>distance %{x:.2f}<br>sink share %{y:.3f}<br>entropy %{marker.color:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis={"title": "mean logical distance attended (tokens)"},
        yaxis={"title": "share of attention on the first token"},
        margin={"t": 30},
    )
    return fig
