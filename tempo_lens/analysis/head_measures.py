"""Head measures over a whole run, on quantities that are not tied to each other.

At one step, a query's "recent" and "distant" means are tied (``n_recent·recent + n_distant·distant = 1``),
so a scatter of one against the other lies on a line. These measures are not: per captured (layer, head),
averaged over every query row of every measured step of a run,

- ``distance``: the mean logical distance attended, ``sum_k p(k) · (logical(q) - logical(k))``;
- ``sink``: the weight on the first token;
- ``entropy``: of the row's distribution (nats).

A run gives one value per (layer, head) and measure; :func:`head_intervals` resamples runs (one value per
run), so a head's interval is over prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..errors import InvalidInputError
from ..layout import Mode, TokenLayout
from ._arrays import layer_labels, step_attention
from .stats import bootstrap_ci

HeadMeasure = Literal["distance", "sink", "entropy"]
HEAD_MEASURES: tuple[HeadMeasure, ...] = get_args(HeadMeasure)
EPS = 1e-10


def _step_measures(a: Float[np.ndarray, "layer batch head_index query_pos key_pos"], layout: TokenLayout, step: int, mode: Mode):
    siblings = layout.step_range(step)
    n_queries, n_keys = a.shape[-2:]
    visible = ~layout.blocked(mode, n_queries=n_queries, n_keys=n_keys).numpy()
    p = np.where(visible, a, 0.0)
    logical = np.asarray(layout.logical_positions[: siblings.stop], dtype=np.float64)
    query_logical = logical[siblings.start : siblings.stop]
    distance = query_logical[:, None] - logical[None, :]  # [query, key]
    per_row = {
        "distance": (p * distance).sum(-1),
        "sink": p[..., 0],
        "entropy": -(p * np.log(p + EPS)).sum(-1),
    }
    return {name: x.mean(axis=1).sum(-1) for name, x in per_row.items()}, n_queries  # [layer, head] summed over rows


def run_head_measures(attention: Mapping[int, Any], layout: TokenLayout, mode: Mode) -> pd.DataFrame:
    """One run: per captured (layer, head), each measure averaged over every query row of every captured step."""
    if not attention:
        raise InvalidInputError("the run has no captured step; capture attention to measure heads")
    totals: dict[str, np.ndarray] = {}
    rows = 0
    labels: list[int] = []
    for step, captured in sorted(attention.items()):
        a, _ = step_attention(captured, layout, step)
        sums, n = _step_measures(a, layout, step, mode)
        for name, value in sums.items():
            totals[name] = totals[name] + value if name in totals else value
        rows += n
        labels = labels or layer_labels(captured, a.shape[0])
    n_layers, n_heads = totals["entropy"].shape
    columns: dict[str, np.ndarray] = {"layer": np.repeat(labels, n_heads), "head": np.tile(np.arange(n_heads), n_layers)}
    columns.update({name: (totals[name] / rows).ravel() for name in HEAD_MEASURES})
    return pd.DataFrame(columns)


def head_intervals(per_run: Sequence[pd.DataFrame], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (layer, head) and measure: the mean over runs with a bootstrap 95 % interval over runs, and n runs."""
    if not per_run:
        raise InvalidInputError("no runs to measure heads over")
    stacked = pd.concat([df.assign(run=i) for i, df in enumerate(per_run)], ignore_index=True)
    rows = []
    for (layer, head), part in stacked.groupby(["layer", "head"], sort=True):
        row: dict[str, Any] = {"layer": int(layer), "head": int(head), "n_runs": len(part)}
        for name in HEAD_MEASURES:
            mean, lo, hi = bootstrap_ci(part[name].to_numpy(), n_boot=n_boot, seed=seed)
            row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def standout_heads(intervals: pd.DataFrame, measure: HeadMeasure, n: int = 3) -> pd.DataFrame:
    """The ``n`` heads whose interval lies furthest above the others' median on ``measure`` (lower bound first)."""
    if measure not in HEAD_MEASURES:
        raise InvalidInputError(f"unknown head measure {measure!r}; choose one of {', '.join(HEAD_MEASURES)}")
    ranked = intervals.sort_values(f"{measure}_lo", ascending=False)
    return ranked.head(n)[["layer", "head", "n_runs", measure, f"{measure}_lo", f"{measure}_hi"]].reset_index(drop=True)
