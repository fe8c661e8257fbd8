"""Attention edges of a captured run: every (query sibling -> earlier key) weight, the data of the token lattice."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_attention
from .captured import as_captured, layer_position

THRESHOLDS = (0.05, 0.1, 0.2, 0.4)  # the lattice's weight thresholds; the smallest bounds the stored edges


def lattice_edges(run: Any, layer: int | None = None, head: int | None = None, min_weight: float = 0.0) -> list[dict]:
    """Every nonzero (query sibling -> earlier key) attention weight at or above ``min_weight``, self-attention left out.

    Each edge: step, query and key (physical indices), weight, parallel (whether the key is parallel).
    """
    run = as_captured(run)
    layout = run.layout
    parallel = layout.parallel_tensor().numpy()
    edges = []
    for step in run.step_ids:
        a = as_attention(run.attention[step])
        if layer is not None:
            a = a[[layer_position(run, layer)]]
        if head is not None:
            a = a[:, :, [head]]
        weights = a.mean(axis=(0, 1, 2))
        for q_row, query in enumerate(layout.step_range(step)):
            for key in np.flatnonzero((weights[q_row] >= min_weight) & (weights[q_row] > 0)):
                if key != query:
                    edges.append(
                        dict(
                            step=step, query=query, key=int(key), weight=float(weights[q_row, key]), parallel=bool(parallel[key])
                        )
                    )
    return edges
