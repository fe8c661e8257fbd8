"""The data behind the report's figures, computed at metrics time from the isolated and visible runs.

The renderer draws figures from this data alone (:mod:`.plots`), so a report can be re-rendered from
``metrics.json`` without the experiment files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import entropy_by_step, head_specialisation
from ..edges import THRESHOLDS as LATTICE_THRESHOLDS
from ..edges import lattice_edges
from ..labels import key_labels
from .inputs import ReportInputs
from .measures import MetricsSettings, entropy_step_of, records
from .schema import EntropyPoint, FigureData, HeadGridData, HeadRow, HeatmapData, LatticeEdge, LatticeRun


def _heatmaps(run) -> list[HeatmapData]:
    out = []
    for step in run.step_ids:
        z = run.attention[step].mean(axis=(0, 1, 2), dtype=np.float64)
        siblings = run.layout.step_range(step)
        out.append(
            HeatmapData(
                step=step,
                z=[[float(v) for v in row] for row in z],
                labels=key_labels(run.layout, run.token_strings, step, z.shape[1]),
                first=siblings.start,
                last=siblings.stop - 1,
                title=f"{run.name} ({run.mode}), step {step}: mean over layers and heads",
            )
        )
    return out


def figure_data(inputs: ReportInputs, options: MetricsSettings = MetricsSettings()) -> FigureData:
    iso, vis = inputs.isolated.run, inputs.visible.run
    n_kv_heads = inputs.isolated.experiment.model.get("n_kv_heads")
    entropy = pd.concat([entropy_by_step(iso), entropy_by_step(vis)], ignore_index=True)
    heads = {
        str(s): records(head_specialisation(iso.attention[s], iso.layout, s, iso.mask, n_kv_heads=n_kv_heads), HeadRow)
        for s in iso.step_ids
    }
    measured = [s for s in iso.step_ids if any(s > p for p in iso.layout.parallel_steps())]
    return FigureData(
        entropy=records(entropy, EntropyPoint),
        heads_by_step=heads,
        heads_step=entropy_step_of(iso, options.entropy_step),
        heatmaps=_heatmaps(iso),
        heatmap_step=measured[0] if measured else (iso.step_ids[-1] if iso.step_ids else None),
        lattice=[_lattice(run) for run in (iso, vis)],
        head_grid=_head_grid(iso, measured[0]) if measured else None,
    )


def _head_grid(run, step: int) -> HeadGridData:
    attention = run.attention[step].mean(axis=1, dtype=np.float64)  # [layer, head, query, key]
    return HeadGridData(step=step, layers=list(run.layers), attention=np.round(attention, 5).tolist())


def _lattice(run) -> LatticeRun:
    edges = [LatticeEdge(**e) for e in lattice_edges(run, min_weight=LATTICE_THRESHOLDS[0])]
    return LatticeRun(name=run.name, mode=run.mode, layout=run.layout.to_dict(), tokens=list(run.token_strings), edges=edges)
