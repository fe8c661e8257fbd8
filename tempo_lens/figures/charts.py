"""Plotly figures for the report and notebooks: pure functions from analysis frames (or a run) to ``go.Figure``.

Nothing here renders images (no kaleido / Chrome): save with ``fig.write_html(path)``. Token texts
are HTML-escaped (``<|begin_of_text|>`` would otherwise vanish as a tag); parallel tokens are
prefixed with ``∥`` and keys hidden by pruning with ``✗``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis._arrays import as_attention
from ..analysis.heads import HEAD_GROUPS
from ..analysis.labels import key_labels, token_text
from ..capture import as_run
from ..errors import InvalidInputError
from ..layout import TokenLayout

MODE_COLOURS = {"isolated": "#1f77b4", "visible": "#ff7f0e", "unique": "#2ca02c"}
GROUP_COLOURS = {"Long-range": "#1f77b4", "Balanced": "#7f7f7f", "Diffuse": "#d62728"}
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _colour(key: str, table: dict[str, str], index: int) -> str:
    return table.get(key, PALETTE[index % len(PALETTE)])


def _reference_line(fig: go.Figure, y: float, label: str) -> None:
    fig.add_hline(y=y, line_dash="dash", line_color="grey", annotation_text=label, annotation_position="top left")


def ratio_figure(ratio_df: pd.DataFrame, *, title: str = "Parallel : non-parallel attention ratio per step") -> go.Figure:
    """Ratio per step, one line per (run, mode), coloured by mode, with a dashed y = 1 reference.

    Missing steps (``missing_reason`` set) are left out, not drawn as 0.
    """
    fig = go.Figure()
    measured = ratio_df[ratio_df["missing_reason"].isna()] if "missing_reason" in ratio_df else ratio_df
    runs = list(dict.fromkeys(zip(ratio_df["run"], ratio_df["mode"])))
    one_run_per_mode = len({m for _, m in runs}) == len(runs)
    for i, (run, mode) in enumerate(runs):
        part = measured[(measured["run"] == run) & (measured["mode"] == mode)].sort_values("step")
        custom = part[["parallel_set_mass", "n_parallel_sets"]].to_numpy() if "parallel_set_mass" in part else None
        fig.add_trace(
            go.Scatter(
                x=part["step"],
                y=part["ratio"],
                mode="lines+markers",
                name=str(mode) if one_run_per_mode else f"{run} ({mode})",
                legendgroup=str(mode),
                line=dict(color=_colour(str(mode), MODE_COLOURS, i)),
                customdata=custom,
                hovertemplate="step %{x}<br>ratio %{y:.3f}"
                + ("<br>set mass %{customdata[0]:.3f} over %{customdata[1]} sets" if custom is not None else "")
                + f"<extra>{html.escape(str(run))}</extra>",
            )
        )
    _reference_line(fig, 1.0, "equal attention")
    fig.update_layout(
        title=title, xaxis_title="step", yaxis_title="parallel : other (per token)", xaxis=dict(dtick=1), legend_title="mode"
    )
    return fig


def entropy_figure(
    entropy_long_df: pd.DataFrame, steps: Sequence[int] | None = None, *, title: str = "Attention entropy per layer"
) -> go.Figure:
    """Layer entropy curve, one line per (run, step); ``steps`` selects which steps to draw.

    Takes the long frame of :func:`tempo_lens.analysis.entropy_by_step` (step, layer, entropy, optional run).
    """
    df = entropy_long_df if steps is None else entropy_long_df[entropy_long_df["step"].isin(list(steps))]
    has_run = "run" in df and df["run"].nunique() > 1
    keys = ["run", "step"] if has_run else ["step"]
    fig = go.Figure()
    for i, (key, part) in enumerate(df.groupby(keys, sort=True)):
        key = key if isinstance(key, tuple) else (key,)
        name = f"{key[0]} step {key[1]}" if has_run else f"step {key[0]}"
        part = part.sort_values("layer")
        fig.add_trace(
            go.Scatter(
                x=part["layer"],
                y=part["entropy"],
                mode="lines+markers",
                name=name,
                line=dict(color=PALETTE[i % len(PALETTE)]),
                hovertemplate="layer %{x}<br>entropy %{y:.3f} nats<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="entropy (nats)")
    return fig


MAX_TEXT_LABELS = 16  # more points than this: labels on hover only (printed labels would overlap)


def head_scatter(head_df: pd.DataFrame, *, title: str = "Head specialisation: recent vs distant attention") -> go.Figure:
    """Recent vs distant mean attention per head, one trace per group; hover shows head, KV head, entropy, max.

    With a ``layer`` column each point is one (layer, head), labelled ``L3H5``. Points carry printed labels
    only when there are at most :data:`MAX_TEXT_LABELS`; the axes fit the points (not from 0), with the
    ``recent = distant`` diagonal drawn across their range.
    """
    fig = go.Figure()
    groups = [g for g in HEAD_GROUPS if g in set(head_df["group"])]
    groups += sorted(set(head_df["group"]) - set(groups))
    show_text = len(head_df) <= MAX_TEXT_LABELS
    for i, group in enumerate(groups):
        part = head_df[head_df["group"] == group]
        kv = part["kv_head"] if "kv_head" in part else part["head"]
        label = (("L" + part["layer"].astype(str) + "H") if "layer" in part else "") + part["head"].astype(str)
        fig.add_trace(
            go.Scatter(
                x=part["recent"],
                y=part["distant"],
                mode="markers+text" if show_text else "markers",
                name=group,
                text=label,
                textposition="top center",
                marker=dict(size=10 if show_text else 7, color=_colour(group, GROUP_COLOURS, i)),
                customdata=np.stack([label, kv, part["entropy"], part["max"]], axis=-1),
                hovertemplate="head %{customdata[0]} (KV %{customdata[1]})<br>recent %{x:.3f}<br>distant %{y:.3f}"
                "<br>entropy %{customdata[2]:.3f}<br>max %{customdata[3]:.3f}<extra>" + group + "</extra>",
            )
        )
    values = head_df[["recent", "distant"]].to_numpy(dtype=float) if len(head_df) else np.array([[0.0, 1.0]])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    fig.add_trace(
        go.Scatter(
            x=[lo, hi], y=[lo, hi], mode="lines", name="recent = distant", line=dict(dash="dash", color="grey"), hoverinfo="skip"
        )
    )
    pad = (hi - lo) * 0.08 or 0.01
    fig.update_layout(
        title=title,
        xaxis_title="recent (mean of last 3 visible keys)",
        yaxis_title="distant (mean of other visible keys)",
        legend_title="group",
        xaxis=dict(range=[lo - pad, hi + pad]),
        yaxis=dict(range=[lo - pad, hi + pad]),
    )
    return fig


def layer_head_heatmap(table: pd.DataFrame, **style: Any) -> go.Heatmap:
    """A heatmap trace of a layer × head table (rows layers, columns heads, as ``DataFrame.pivot`` makes it).

    ``style`` is passed to ``go.Heatmap`` (colour scale, range, colour bar, hover template).
    """
    return go.Heatmap(z=table.to_numpy(), x=list(table.columns), y=list(table.index), **style)


def head_map_figure(cells: pd.DataFrame, *, title: str = "Per (layer, head): first-token share and parallel effect") -> go.Figure:
    """Two layer × head heatmaps from a :func:`~tempo_lens.analysis.head_map.head_map` frame: ``sink_share`` (0-1) and
    ``parallel_coef`` (log factor, diverging around 0; hover shows the factor)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("share of attention on the first token", "parallel coefficient (distance and token kind fixed)"),
        horizontal_spacing=0.12,
    )
    if len(cells):
        sink = cells.pivot(index="layer", columns="head", values="sink_share")
        coef = cells.pivot(index="layer", columns="head", values="parallel_coef").astype(float)
        bound = float(np.nanmax(np.abs(coef.to_numpy()))) if np.isfinite(coef.to_numpy()).any() else 1.0
        fig.add_trace(
            layer_head_heatmap(
                sink,
                colorscale="Blues",
                zmin=0,
                zmax=1,
                colorbar=dict(x=0.44, title="share"),
                hovertemplate="layer %{y} head %{x}<br>first-token share %{z:.3f}<extra></extra>",
            ),
            1,
            1,
        )
        fig.add_trace(
            layer_head_heatmap(
                coef,
                colorscale="RdBu_r",
                zmin=-bound,
                zmax=bound,
                customdata=np.exp(coef.to_numpy()),
                colorbar=dict(title="coef"),
                hovertemplate="layer %{y} head %{x}<br>coefficient %{z:.3f}<br>factor %{customdata:.2f}x<extra></extra>",
            ),
            1,
            2,
        )
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", autorange="reversed")
    fig.update_layout(title=title)
    return fig


def attention_heatmap(run: Any, step: int, layer: int | None = None, head: int | None = None) -> go.Figure:
    """One step's attention, queries (the siblings) x keys, averaged over layers / heads unless one is chosen.

    ``layer`` is a model layer index (one of ``run.layers``). Tick labels mark parallel (``∥``) and
    pruned-hidden (``✗``) keys; the step's own siblings are outlined.
    """
    run = as_run(run)
    a = as_attention(run.step_array(step))
    if layer is not None:
        if layer not in run.layers:
            raise InvalidInputError(f"layer {layer} was not captured (captured: {list(run.layers)})")
        a = a[[list(run.layers).index(layer)]]
    if head is not None:
        if not (isinstance(head, int) and 0 <= head < a.shape[2]):
            raise InvalidInputError(f"head {head!r} is not a head of this model (0..{a.shape[2] - 1})")
        a = a[:, :, [head]]
    z = a.mean(axis=(0, 1, 2))
    siblings = run.layout.step_range(step)
    labels = key_labels(run.layout, run.token_strings, step, z.shape[1])
    what = f"layer {layer}" if layer is not None else "mean over layers"
    what += f", head {head}" if head is not None else ", mean over heads"
    return heatmap_figure(z, labels, siblings, f"{html.escape(str(run.name))} ({run.mode}), step {step}: {what}")


def heatmap_figure(z: Any, labels: Sequence[str], siblings: range, title: str) -> go.Figure:
    """A queries x keys attention matrix with key labels (``labels[k]``); the siblings' key columns outlined."""
    z = np.asarray(z, dtype=np.float64)
    n_queries, n_keys = z.shape
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(n_keys)),
            y=list(range(n_queries)),
            colorscale="Viridis",
            name="attention",
            customdata=np.array([[labels[k] for k in range(n_keys)] for _ in range(n_queries)]),
            hovertemplate="query %{y}<br>key %{customdata}<br>attention %{z:.4f}<extra></extra>",
            colorbar=dict(title="attention"),
        )
    )
    fig.add_shape(
        type="rect",
        x0=siblings.start - 0.5,
        x1=siblings.stop - 0.5,
        y0=-0.5,
        y1=n_queries - 0.5,
        line=dict(color="white", width=2),
    )
    fig.update_layout(
        title=title,
        xaxis=dict(
            title="key (∥ parallel, ✗ pruned)",
            tickmode="array",
            tickvals=list(range(n_keys)),
            ticktext=list(labels),
            tickangle=-60,
        ),
        yaxis=dict(
            title="query sibling",
            tickmode="array",
            tickvals=list(range(n_queries)),
            ticktext=[labels[i] for i in siblings],
            autorange="reversed",
        ),
    )
    return fig


def branching_figure(
    layout: TokenLayout, token_strings: Sequence[str], *, title: str = "TEMPO branching: siblings per step"
) -> go.Figure:
    """Steps on x, each sibling at its selection probability on y; pruned siblings greyed and struck through.

    Traces: "kept", "pruned" (when any) and "most likely" (the line through each step's top sibling).
    """
    if not isinstance(layout, TokenLayout) or not isinstance(token_strings, Sequence) or len(token_strings) != len(layout):
        raise InvalidInputError(
            "branching_figure needs a TokenLayout and one token text per token (result.layout, result.token_strings)"
        )
    steps = np.array(layout.steps)
    generated = np.flatnonzero(steps >= 0)
    probs = np.array(layout.probs, dtype=np.float64)
    pruned = np.array([layout.is_pruned(i) for i in range(len(layout))])

    def hover(i: int) -> str:
        text = f"{token_text(token_strings[i])}<br>p = {probs[i]:.3f}<br>physical {i}"
        if pruned[i]:
            text += f"<br>pruned after step {layout.pruned_at[i]} (score {layout.prune_scores[i]:.3f})"
        return text

    fig = go.Figure()
    styles = (("kept", ~pruned, "#1f77b4", "{}"), ("pruned", pruned, "#b0b0b0", "<s>{}</s>"))
    for name, chosen, colour, fmt in styles:
        idx = [int(i) for i in generated if chosen[i]]
        if name == "pruned" and not idx:
            continue
        fig.add_trace(
            go.Scatter(
                x=steps[idx],
                y=probs[idx],
                mode="markers+text",
                name=name,
                text=[fmt.format(token_text(token_strings[i])) for i in idx],
                textposition="middle right",
                textfont=dict(color="#555555" if name == "pruned" else "black"),
                marker=dict(color=colour, size=9, symbol="x" if name == "pruned" else "circle"),
                hovertext=[hover(i) for i in idx],
                hoverinfo="text",
            )
        )
    top = [layout.step_range(s).start for s in range(layout.n_steps)]
    fig.add_trace(
        go.Scatter(
            x=steps[top],
            y=probs[top],
            mode="lines",
            name="most likely",
            line=dict(color="#1f77b4", width=1, dash="dot"),
            hoverinfo="skip",
        )
    )
    fig.update_layout(title=title, xaxis=dict(title="step", dtick=1), yaxis=dict(title="selection probability"))
    return fig


def ratio_ci_figure(
    summary_df: pd.DataFrame,
    *,
    label: str | None = None,
    null: float = 1.0,
    title: str = "Mean ratio per mode with 95 % bootstrap interval",
) -> go.Figure:
    """Mean ± interval per group (a :func:`tempo_lens.analysis.ci_summary` frame: label, mean, lo, hi[, n]).

    ``label`` names the group column (default: the first of mode / group / label / run present);
    a dashed line marks ``null`` (1 for ratios, 0 for differences).
    """
    if label is None:
        label = next((c for c in ("mode", "group", "label", "run") if c in summary_df), summary_df.columns[0])
    fig = go.Figure()
    for i, row in enumerate(summary_df.itertuples(index=False)):
        row = row._asdict()
        name = str(row[label])
        lo, hi, mean = row["lo"], row["hi"], row["mean"]
        has_ci = not (pd.isna(lo) or pd.isna(hi))
        n = f"<br>n = {row['n']}" if "n" in row else ""
        fig.add_trace(
            go.Scatter(
                x=[name],
                y=[mean],
                mode="markers",
                name=name,
                marker=dict(size=12, color=_colour(name, MODE_COLOURS, i)),
                error_y=dict(type="data", symmetric=False, array=[hi - mean], arrayminus=[mean - lo]) if has_ci else None,
                hovertemplate=f"{html.escape(name)}<br>mean %{{y:.3f}}"
                + (f"<br>interval {lo:.3f} to {hi:.3f}" if has_ci else "<br>no interval (n < 2)")
                + n
                + "<extra></extra>",
            )
        )
    _reference_line(fig, null, "no difference")
    fig.update_layout(title=title, xaxis_title=label, yaxis_title="mean", showlegend=False)
    return fig


def step_slider(figures: dict[int, go.Figure], *, active: int | None = None) -> go.Figure:
    """Per-step figures joined into one, with a slider that shows one step at a time.

    Each step keeps its own traces, title, axes and shapes (a heatmap's key labels differ per step).
    ``active`` is the step shown first (default the first one).
    """
    if not figures:
        raise InvalidInputError("step_slider needs at least one figure (a dict step -> figure)")
    steps = sorted(figures)
    shown = steps.index(active) if active in steps else 0
    fig = go.Figure()
    spans = []
    for step in steps:
        start = len(fig.data)
        for trace in figures[step].data:
            fig.add_trace(trace)
        spans.append(range(start, len(fig.data)))
    for i, span in enumerate(spans):
        for index in span:
            fig.data[index].visible = i == shown

    def layout_of(step: int) -> dict:
        layout = figures[step].layout
        return {"title": layout.title, "xaxis": layout.xaxis, "yaxis": layout.yaxis, "shapes": layout.shapes or []}

    slider_steps = []
    for i, step in enumerate(steps):
        visible = [index in spans[i] for index in range(len(fig.data))]
        slider_steps.append(dict(method="update", label=str(step), args=[{"visible": visible}, layout_of(step)]))
    fig.update_layout(
        **layout_of(steps[shown]),
        legend_title=figures[steps[shown]].layout.legend.title,
        sliders=[dict(active=shown, currentvalue={"prefix": "step "}, pad={"t": 120}, steps=slider_steps)],
    )
    return fig
