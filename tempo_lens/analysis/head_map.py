"""Per (layer, head) localisation: which heads carry the attention sink and which the parallel effect.

Per captured (layer, head):

- **sink share**: the weight on physical position 0, averaged over batch, queries and each run's
  captured steps, then over runs (prompts);
- **parallel coefficient**: the ``parallel`` coefficient of :mod:`.regression`'s full model
  (log distance, prompt token, first token and same-step sibling held fixed) fitted to that head's
  weights alone, over every run's (query, key) pairs. ``exp`` of it is the factor by which the head
  weights a parallel key against a non-parallel key of the same kind at the same distance.

No averaging over head index across layers: head 3 of layer 0 and head 3 of layer 20 are different heads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..capture import as_runs
from ._arrays import step_attention
from .regression import head_parallel_coefficients

HEAD_MAP_COLUMNS = ["layer", "head", "sink_share", "parallel_coef"]


def sink_share(run: Any) -> np.ndarray:
    """``[layer, head]`` weight on physical position 0, averaged over batch, queries and the run's captured steps."""
    shares = []
    for step in run.step_ids:
        a, _ = step_attention(run.attention[step], run.layout, step)
        shares.append(a[..., 0].mean(axis=(1, 3), dtype=np.float64))
    return np.mean(shares, axis=0)


def head_map(runs: Iterable[Any]) -> pd.DataFrame:
    """One row per (model layer, head): sink_share (mean over runs) and parallel_coef (all runs' pairs together)."""
    runs = [r for r in as_runs(runs) if r.step_ids]
    if not runs:
        return pd.DataFrame(columns=HEAD_MAP_COLUMNS)
    sink = np.mean([sink_share(r) for r in runs], axis=0)
    coef = head_parallel_coefficients(runs)
    n_layers, n_heads = sink.shape
    layers = np.asarray(list(runs[0].layers)[:n_layers])
    return pd.DataFrame(
        {
            "layer": np.repeat(layers, n_heads),
            "head": np.tile(np.arange(n_heads), n_layers),
            "sink_share": sink.ravel(),
            "parallel_coef": coef.ravel(),
        },
        columns=HEAD_MAP_COLUMNS,
    )
