"""The token lattice: a TEMPO run as a graph of tokens, with the attention later tokens pay earlier ones.

Tokens sit at (logical position, -rank): steps run left to right, a step's siblings stack
downwards from the most likely. An arc goes from each query sibling to each earlier token it
attends to; its width grows with the weight (mean over the captured layers and heads, or one
``layer`` / ``head``), hovering its midpoint gives the value, and a slider hides arcs under a
threshold. Arcs to parallel keys are orange. Pruned tokens are grey and struck through. Several runs
(isolated and visible) are drawn one above the other on a shared x axis.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.captured import as_captured
from ..analysis.edges import THRESHOLDS, lattice_edges
from ..text import visible_token

EDGE_COLOURS = {"parallel": "#ff7f0e", "other": "#4c72b0"}
ARC_POINTS = 12


def _arc(x0: float, y0: float, x1: float, y1: float) -> tuple[list[float], list[float], tuple[float, float]]:
    """A quadratic arc from (x0, y0) to (x1, y1) bulging left of the direction of travel; also its midpoint."""
    dx, dy = x1 - x0, y1 - y0
    length = float(np.hypot(dx, dy)) or 1.0
    bulge = 0.25 * length**0.6
    cx, cy = (x0 + x1) / 2 - dy / length * bulge, (y0 + y1) / 2 + dx / length * bulge
    t = np.linspace(0, 1, ARC_POINTS)
    xs = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1
    ys = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1
    return list(xs), list(ys), (float(xs[ARC_POINTS // 2]), float(ys[ARC_POINTS // 2]))


def _node_trace(run: Any, shown: list[int]) -> go.Scatter:
    layout = run.layout
    texts, hovers, colours = [], [], []
    for i in shown:
        token = html.escape(visible_token(run.token_strings[i]))
        step = layout.steps[i]
        pruned = layout.is_pruned(i)
        texts.append(f"<s>{token}</s>" if pruned else token)
        hover = f"{token}<br>physical {i}, position {layout.logical_positions[i]}"
        if step >= 0:
            hover += f"<br>step {step}, rank {layout.rank_of(i)}, p = {layout.probs[i]:.3f}"
        if pruned:
            hover += f"<br>pruned after step {layout.pruned_at[i]}"
        hovers.append(hover)
        colours.append("#b0b0b0" if pruned else "#ff7f0e" if layout.is_parallel(i) else "#1f77b4")
    return go.Scatter(
        x=[layout.logical_positions[i] for i in shown],
        y=[-layout.rank_of(i) if layout.steps[i] >= 0 else 0 for i in shown],
        mode="markers+text",
        text=texts,
        textposition="top center",
        hovertext=hovers,
        hoverinfo="text",
        marker=dict(size=9, color=colours, line=dict(color="white", width=1)),
        showlegend=False,
        name=run.name,
    )


def _edge_traces(run: Any, edges: list[dict], shown: set[int], thresholds: Sequence[float]) -> list[tuple[go.Scatter, int]]:
    """Arc traces per (threshold bin, key kind) and one hover trace per bin, each with its bin index."""
    layout = run.layout

    def point(i: int) -> tuple[float, float]:
        return layout.logical_positions[i], (-layout.rank_of(i) if layout.steps[i] >= 0 else 0)

    bounds = list(thresholds) + [np.inf]
    widths = np.linspace(1, 7, len(thresholds))
    traces = []
    for b in range(len(thresholds)):
        in_bin = [e for e in edges if bounds[b] <= e["weight"] < bounds[b + 1] and e["key"] in shown and e["query"] in shown]
        mids, hovers = [], []
        for kind in ("parallel", "other"):
            xs: list[float | None] = []
            ys: list[float | None] = []
            for e in (e for e in in_bin if e["parallel"] == (kind == "parallel")):
                ax, ay, mid = _arc(*point(e["query"]), *point(e["key"]))
                xs += ax + [None]
                ys += ay + [None]
                mids.append(mid)
                hovers.append(
                    f"{html.escape(visible_token(run.token_strings[e['query']]))} → "
                    f"{html.escape(visible_token(run.token_strings[e['key']]))}<br>attention {e['weight']:.3f}"
                )
            if xs:
                traces.append(
                    (
                        go.Scatter(
                            x=xs,
                            y=ys,
                            mode="lines",
                            hoverinfo="skip",
                            showlegend=False,
                            line=dict(color=EDGE_COLOURS[kind], width=float(widths[b])),
                            opacity=0.55,
                        ),
                        b,
                    )
                )
        if mids:
            traces.append(
                (
                    go.Scatter(
                        x=[m[0] for m in mids],
                        y=[m[1] for m in mids],
                        mode="markers",
                        hovertext=hovers,
                        hoverinfo="text",
                        marker=dict(size=5, color="#555555", opacity=0.35),
                        showlegend=False,
                    ),
                    b,
                )
            )
    return traces


def token_lattice(
    *runs: Any,
    layer: int | None = None,
    head: int | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    prompt_tokens: int | None = 8,
    title: str = "Token lattice: attention of later tokens to earlier ones",
    edges: Sequence[list[dict]] | None = None,
) -> go.Figure:
    """The lattice of one or more captured runs (CapturedRun, or a GenerationResult with capture), stacked.

    ``thresholds``: the slider's stops (arcs below the first are never drawn); ``prompt_tokens``: how
    many trailing prompt tokens to show (None: all; arcs to hidden ones are left out). ``edges``: one
    :func:`lattice_edges` list per run, when they were computed earlier (the report stores them, so
    its runs need no attention arrays here).
    """
    if not runs:
        raise ValueError("token_lattice needs at least one run")
    captured = [as_captured(r) for r in runs]
    thresholds = sorted(float(t) for t in thresholds)
    fig = make_subplots(
        rows=len(captured),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[f"{html.escape(r.name)} ({r.mode})" for r in captured],
    )
    bins: list[int | None] = []
    max_rank = 0
    for row, run in enumerate(captured, start=1):
        layout = run.layout
        first = 0 if prompt_tokens is None else max(0, layout.n_prompt - prompt_tokens)
        shown = list(range(first, len(layout)))
        run_edges = edges[row - 1] if edges is not None else lattice_edges(run, layer, head, min_weight=thresholds[0])
        for trace, b in _edge_traces(run, run_edges, set(shown), thresholds):
            fig.add_trace(trace, row=row, col=1)
            bins.append(b)
        fig.add_trace(_node_trace(run, shown), row=row, col=1)
        bins.append(None)
        max_rank = max([max_rank] + [layout.rank_of(i) for i in shown if layout.steps[i] >= 0])
        ticks = sorted({layout.logical_positions[i] for i in shown})
        labels = [f"s{p - layout.n_prompt}" if p >= layout.n_prompt else str(p) for p in ticks]
        fig.update_xaxes(tickmode="array", tickvals=ticks, ticktext=labels, row=row, col=1)
    fig.update_yaxes(visible=False, range=[-max_rank - 0.8, 1.0])
    fig.update_xaxes(title_text="step (prompt positions left)", row=len(captured), col=1)
    slider = [
        dict(method="restyle", label=f"{t:g}", args=[{"visible": [b is None or b >= i for b in bins]}])
        for i, t in enumerate(thresholds)
    ]
    fig.update_layout(
        title=title,
        height=170 + len(captured) * (120 + 70 * max_rank),
        showlegend=False,
        sliders=[dict(active=0, currentvalue={"prefix": "attention ≥ "}, pad={"t": 40}, steps=slider)],
    )
    return fig
