"""The report's figures, drawn from :class:`~.schema.Metrics` alone (never from experiment files)."""

from __future__ import annotations

import html
from dataclasses import asdict

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.metrics.schema import CrossModelEntry, HeadCell, Interval, Metrics, MultiPrompt, missing
from ..capture import CapturedRun
from ..layout import TokenLayout
from . import charts as figures
from .heatmaps import entropy_heatmap_from_table, head_grid
from .lattice import token_lattice

COMPARISON_MEASURES = (
    ("ratio", "ratio (intended definition)"),
    ("script_ratio", "ratio (reference script's definition)"),
    ("ratio_no_sink", "ratio without the first token"),
    ("ratio_unique", "ratio at unique positions"),
)


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in rows])


def ratio_plot(metrics: Metrics) -> go.Figure:
    single = metrics.single_run
    names = {r.mode: r.name for r in single.runs}
    df = _frame(single.ratios)
    if df.empty:
        df = pd.DataFrame(columns=["mode", "step", "ratio"])
    df = df.assign(run=[names.get(m, m) for m in df["mode"]], missing_reason=None)
    return figures.ratio_figure(df)


def entropy_plot(metrics: Metrics) -> go.Figure:
    return entropy_heatmap_from_table(_frame(metrics.figures.entropy))


def head_grid_plot(metrics: Metrics) -> go.Figure:
    """Every layer × head of the stored step of the isolated run (its layout comes from the lattice data)."""
    grid, lattice = metrics.figures.head_grid, metrics.figures.lattice[0]
    run = CapturedRun(
        name=lattice.name,
        prompt="",
        mode=lattice.mode,
        layout=TokenLayout.from_dict(lattice.layout),
        token_strings=lattice.tokens,
        layers=grid.layers,
        attention={grid.step: np.asarray(grid.attention, dtype=np.float32)[:, None]},
    )
    return head_grid(run, grid.step)


def heads_plot(metrics: Metrics) -> go.Figure:
    data = metrics.figures
    by_step = {
        int(s): figures.head_scatter(_frame(rows), title=f"Head specialisation at step {s}: recent vs distant attention")
        for s, rows in data.heads_by_step.items()
        if rows
    }
    return figures.step_slider(by_step, active=data.heads_step)


def head_map_plot(cells: list[HeadCell]) -> go.Figure:
    return figures.head_map_figure(_frame(cells))


def layer_heads_plot(metrics: Metrics) -> go.Figure:
    single = metrics.single_run
    return figures.head_scatter(
        _frame(single.layer_heads),
        title=f"Specialisation per (layer, head) at step {single.entropy_step}: recent vs distant attention",
    )


def heatmap_plot(metrics: Metrics) -> go.Figure:
    data = metrics.figures
    by_step = {
        h.step: figures.heatmap_figure(
            [[float("nan") if v is None else v for v in row] for row in h.z],
            h.labels,
            range(h.first, h.last + 1),
            html.escape(h.title),
        )
        for h in data.heatmaps
    }
    return figures.step_slider(by_step, active=data.heatmap_step)


def lattice_plot(metrics: Metrics) -> go.Figure:
    """The token lattice of the isolated and visible runs, from the stored arcs."""
    runs = [
        CapturedRun(
            name=r.name,
            prompt="",
            mode=r.mode,
            layout=TokenLayout.from_dict(r.layout),
            token_strings=r.tokens,
            layers=[],
            attention={},
        )
        for r in metrics.figures.lattice
    ]
    edges = [[asdict(e) for e in r.edges] for r in metrics.figures.lattice]
    return token_lattice(*runs, edges=edges, title="Token lattice: siblings stacked per step, arcs = attention to earlier tokens")


def multi_plot(multi: MultiPrompt) -> go.Figure:
    rows = [{"mode": m.mode, "n": m.ratio.n, "mean": m.ratio.mean, "lo": m.ratio.lo, "hi": m.ratio.hi} for m in multi.modes]
    return figures.ratio_ci_figure(pd.DataFrame(rows))


def _point(fig: go.Figure, name: str, x: str, ci: Interval | None, colour: str, symbol: str, show: bool) -> None:
    if ci is None or missing(ci.mean):
        return
    has = not (missing(ci.lo) or missing(ci.hi))
    fig.add_trace(
        go.Scatter(
            x=[x],
            y=[ci.mean],
            mode="markers",
            name=name,
            legendgroup=name,
            showlegend=show,
            offsetgroup=name,
            marker=dict(size=11, color=colour, symbol=symbol),
            error_y=dict(type="data", symmetric=False, array=[ci.hi - ci.mean], arrayminus=[ci.mean - ci.lo]) if has else None,
            hovertemplate=f"{html.escape(x)}<br>{html.escape(name)}<br>mean %{{y:.3f}}"
            + (f"<br>95 % interval {ci.lo:.3f} to {ci.hi:.3f}" if has else "")
            + f"<br>n = {ci.n}<extra></extra>",
        )
    )


def model_comparison_plot(entries: list[CrossModelEntry], reference: dict) -> go.Figure:
    """Per model: each ratio's mean across prompts with its 95 % interval (isolated: circles, visible: diamonds),
    and the reference report's quoted values (cogito 3B, no interval) beside them."""
    fig = go.Figure()
    shown: set[str] = set()
    for entry in entries:
        if entry.multi is None:
            continue
        for i, (key, label) in enumerate(COMPARISON_MEASURES):
            for mode, symbol in (("isolated", "circle"), ("visible", "diamond")):
                m = entry.multi.mode(mode)
                name = f"{label}, {mode}"
                _point(fig, name, entry.folder, getattr(m, key) if m else None, figures.PALETTE[i], symbol, name not in shown)
                shown.add(name)
    label = f"{reference.get('model', 'reference')} (quoted)"
    for mode, symbol in (("isolated", "circle"), ("visible", "diamond")):
        value = reference.get("mode_averages", {}).get(mode)
        name = f"reference report, {mode} (reference script's definition, one prompt)"
        _point(fig, name, label, Interval(mean=value, n=1), "#000000", symbol + "-open", True)
    fig.add_hline(y=1.0, line_dash="dash", line_color="grey", annotation_text="equal attention", annotation_position="top left")
    fig.update_layout(
        title="Parallel : non-parallel ratio by model (mean across prompts, 95 % bootstrap interval)",
        xaxis_title="model",
        yaxis_title="ratio",
        scattermode="group",
        legend=dict(orientation="h", y=-0.25),
    )
    return fig
