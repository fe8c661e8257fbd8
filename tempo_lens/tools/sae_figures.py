"""Figures of SAE latents on TEMPO runs (plotly, offline HTML): one latent across runs, and top latents on the lattice.

Both read :func:`~tempo_lens.tools.sae.sae_latents` frames. Where the SAE's metadata names a Neuronpedia id
(SAELens sets ``sae.cfg.metadata.neuronpedia_id`` for SAEs loaded by release), the figures show the latent's
Neuronpedia address as text; nothing is fetched.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.stats import bootstrap_ci
from ..errors import InvalidInputError
from ..siblings import RunSource, run_view
from ..text import visible_token

NEURONPEDIA = "https://neuronpedia.org"
COLOURS = {"parallel": "#ff7f0e", "non-parallel": "#1f77b4"}


def neuronpedia_url(sae: Any, latent: int) -> str | None:
    """``https://neuronpedia.org/<neuronpedia id>/<latent>`` when the SAE's metadata names an id, else None."""
    metadata = getattr(getattr(sae, "cfg", None), "metadata", None)
    neuronpedia_id = getattr(metadata, "neuronpedia_id", None)
    return f"{NEURONPEDIA}/{neuronpedia_id}/{int(latent)}" if isinstance(neuronpedia_id, str) and neuronpedia_id else None


def _runs(frames: Sequence[pd.DataFrame] | pd.DataFrame) -> list[pd.DataFrame]:
    """One frame per run: the list as given, or a concatenated frame split by (run, prompt)."""
    if isinstance(frames, pd.DataFrame):
        return [part for _, part in frames.groupby(["run", "prompt"], sort=False)]
    runs = list(frames)
    if not runs or not all(isinstance(f, pd.DataFrame) for f in runs):
        raise InvalidInputError("frames must be sae_latents frames, one per run (or one concatenated frame)")
    return runs


def _token_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(parallel, non-parallel) generated tokens of one run: from ``sae_latents``'s record, else the tokens in the frame."""
    counts = frame.attrs.get("n_tokens")
    if counts:
        return int(counts["parallel"]), int(counts["other"])
    tokens = frame.drop_duplicates("physical_index")
    return int(tokens.parallel.sum()), int((~tokens.parallel.astype(bool)).sum())


def latent_table(frames: Sequence[pd.DataFrame] | pd.DataFrame, latent: int) -> pd.DataFrame:
    """Per run: ``latent``'s mean activation over its parallel and over its non-parallel generated tokens (inactive = 0)."""
    rows = []
    for frame in _runs(frames):
        n_par, n_other = _token_counts(frame)
        hits = frame[frame.latent == latent]
        by_kind = hits.groupby(hits.parallel.astype(bool)).activation.sum()
        run, prompt = (frame.run.iloc[0], frame.prompt.iloc[0]) if len(frame) else ("run", "")
        rows.append(
            (
                run,
                prompt,
                float(by_kind.get(True, 0.0)) / n_par if n_par else np.nan,
                float(by_kind.get(False, 0.0)) / n_other if n_other else np.nan,
                n_par,
                n_other,
            )
        )
    return pd.DataFrame(rows, columns=["run", "prompt", "parallel", "non-parallel", "n_parallel", "n_non_parallel"])


def latent_figure(
    frames: Sequence[pd.DataFrame] | pd.DataFrame, latent: int, *, sae: Any = None, seed: int = 0, title: str | None = None
) -> go.Figure:
    """One latent on parallel against non-parallel tokens: the mean over runs with a 95 % bootstrap interval, and each run.

    ``frames``: :func:`~tempo_lens.tools.sae_latents` frames, one per run. ``sae``: the SAE, for its Neuronpedia address.
    """
    table = latent_table(frames, latent)
    fig = go.Figure()
    for x, kind in enumerate(COLOURS):
        values = table[kind].to_numpy(dtype=float)
        mean, lo, hi = bootstrap_ci(values, n_boot=2000, seed=seed)
        has_interval = np.isfinite(lo) and np.isfinite(hi)
        fig.add_trace(
            go.Bar(
                x=[kind],
                y=[mean],
                marker_color=COLOURS[kind],
                opacity=0.6,
                name=f"{kind} (mean over {int(np.isfinite(values).sum())} runs)",
                error_y=dict(type="data", symmetric=False, array=[hi - mean], arrayminus=[mean - lo]) if has_interval else None,
                hovertemplate=f"{kind}<br>mean %{{y:.4f}}"
                + (f"<br>95 % interval [{lo:.4f}, {hi:.4f}]" if has_interval else "")
                + "<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[kind] * len(values),
                y=values,
                mode="markers",
                marker=dict(color="#333333", size=6),
                text=[html.escape(str(p)) for p in table.prompt],
                hovertemplate="%{text}<br>%{y:.4f}<extra></extra>",
                showlegend=x == 0,
                name="one run",
            )
        )
    url = neuronpedia_url(sae, latent)
    fig.update_layout(
        title=title or f"SAE latent {latent}: mean activation per generated token",
        yaxis=dict(title="mean activation (inactive = 0)"),
        barmode="overlay",
    )
    if url:
        fig.add_annotation(text=f"Neuronpedia: {url}", xref="paper", yref="paper", x=0, y=1.08, showarrow=False)
    return fig


def top_latents(frame: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """Each generated token's ``top`` latents by activation: physical_index, latent, activation, rank (0 = strongest)."""
    ordered = frame.sort_values(["physical_index", "activation"], ascending=[True, False])
    picked = ordered.groupby("physical_index", sort=True).head(top).copy()
    picked["rank"] = picked.groupby("physical_index").cumcount()
    return picked[["physical_index", "latent", "activation", "rank"]].reset_index(drop=True)


def sae_lattice(
    run: RunSource, frame: pd.DataFrame, *, top: int = 3, sae: Any = None, prompt_tokens: int = 4, model: Any = None
) -> go.Figure:
    """The run's tokens on the lattice (logical position across, sibling rank down), each with its ``top`` latents.

    ``frame``: :func:`~tempo_lens.tools.sae_latents` of this run. Parallel tokens are orange, pruned ones grey and
    struck through; hovering a token lists its latents with their activation (and Neuronpedia addresses when the
    SAE's metadata names an id).
    """
    view = run_view(run, model)
    layout = view.layout
    if len(frame) and frame.physical_index.max() >= len(layout):
        raise InvalidInputError("frame does not belong to this run (its physical indices exceed the run's tokens)")
    chosen = top_latents(frame, top)
    by_token = {i: part for i, part in chosen.groupby("physical_index")}
    shown = list(range(max(0, layout.n_prompt - prompt_tokens), len(layout)))
    xs, ys, labels, hovers, colours = [], [], [], [], []
    for i in shown:
        token = html.escape(visible_token(view.token_strings[i]))
        generated = layout.steps[i] >= 0
        xs.append(layout.logical_positions[i])
        ys.append(-layout.rank_of(i) if generated else 0)
        latents = by_token.get(i)
        lines = [] if latents is None else [f"#{int(r.latent)} {r.activation:.2f}" for r in latents.itertuples()]
        labels.append(("<s>" + token + "</s>" if layout.is_pruned(i) else token) + "".join(f"<br>{line}" for line in lines))
        hover = f"{token}<br>physical {i}, position {layout.logical_positions[i]}"
        if generated:
            hover += f"<br>step {layout.steps[i]}, rank {layout.rank_of(i)}, p = {layout.probs[i]:.3f}"
        for line, latent in zip(lines, [] if latents is None else latents.latent):
            url = neuronpedia_url(sae, int(latent))
            hover += f"<br>{line}" + (f" {url}" if url else "")
        hovers.append(hover)
        colours.append("#b0b0b0" if layout.is_pruned(i) else "#ff7f0e" if layout.is_parallel(i) else "#1f77b4")
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            text=labels,
            textposition="bottom center",
            hovertext=hovers,
            hoverinfo="text",
            marker=dict(size=10, color=colours, line=dict(color="white", width=1)),
            showlegend=False,
        )
    )
    max_rank = max([0] + [layout.rank_of(i) for i in shown if layout.steps[i] >= 0])
    ticks = sorted({layout.logical_positions[i] for i in shown})
    fig.update_xaxes(
        tickmode="array",
        tickvals=ticks,
        ticktext=[f"s{p - layout.n_prompt}" if p >= layout.n_prompt else str(p) for p in ticks],
        title="step (prompt positions left)",
    )
    fig.update_yaxes(visible=False, range=[-max_rank - 1.2, 0.6])
    url = neuronpedia_url(sae, 0)
    title = f"Top {top} SAE latents per token"
    if url:
        title += f" (Neuronpedia: {url.rsplit('/', 1)[0]}/LATENT)"
    fig.update_layout(title=title, height=260 + 110 * max_rank)
    return fig
