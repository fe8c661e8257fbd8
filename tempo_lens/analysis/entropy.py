"""Layer attention entropy (``docs/definitions.md``): how focused each layer's attention is at one step.

``H_l = mean over batch, heads, queries of -sum_k A log(A + 1e-10)`` (natural log, not normalised,
so it grows with the number of keys: compare layers within a step, not across distant steps).
Layers are then labelled by rank ("most focused" / "mid" / "most diffuse") and by depth third
("early" / "middle" / "late", ``layer * 3 // n_layers``) to show the funnel the reference describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..capture import as_run, as_runs
from ..errors import InvalidInputError
from ._arrays import as_attention, layer_labels

EPS = 1e-10
FOCUSED, MID, DIFFUSE = "most focused", "mid", "most diffuse"
DEPTHS = ("early", "middle", "late")


def layer_entropy(attention: Any) -> Float[np.ndarray, " layer"]:
    """Mean attention entropy (nats) of each captured layer of one step ``[layer, batch, head, query, key]``."""
    a = as_attention(attention)
    per_row = -(a * np.log(a + EPS)).sum(-1)
    return per_row.mean(axis=(1, 2, 3), dtype=np.float64)


def entropy_groups(entropy: Float[np.ndarray, " layer"], n_extreme: int = 3) -> list[str]:
    """Rank labels: the ``k`` lowest-entropy layers "most focused", the ``k`` highest "most diffuse", the rest "mid".

    ``k = min(n_extreme, n_layers // 2)`` so the two ends never overlap on small models; ties are
    broken by layer order (stable sort), so the labels are deterministic.
    """
    entropy = np.asarray(entropy, dtype=np.float64)
    n = len(entropy)
    k = min(n_extreme, n // 2)
    order = np.argsort(entropy, kind="stable")
    groups = np.full(n, MID, dtype=object)
    if k:
        groups[order[:k]] = FOCUSED
        groups[order[n - k :]] = DIFFUSE
    return list(groups)


def depth_third(layer: int, n_layers: int) -> str:
    """ "early" / "middle" / "late" by ``layer * 3 // n_layers``."""
    return DEPTHS[min(2, int(layer) * 3 // int(n_layers))]


def layer_entropy_table(
    source: Any, layers: Sequence[int] | None = None, *, n_layers: int | None = None, step: int | None = None
) -> pd.DataFrame:
    """Columns layer, entropy, group, depth for one captured step; with run, mode, step for runs.

    ``source`` is one step's attention (an array or ``result.capture[step]``), or runs / results / an
    experiment, for which every captured step (or only ``step``) gets its rows. ``layers`` are the
    model layer numbers of the captured layers (default: the capture's own, else ``0..L-1``);
    ``n_layers`` is the model's depth for the thirds (default: the run's ``n_layers``, else
    ``max(layers) + 1``).
    """
    if _is_runs(source):
        frames = []
        for run in as_runs(source):
            depth = n_layers or run.meta.get("n_layers")
            for s in [step] if step is not None else run.step_ids:
                frame = layer_entropy_table(run.attention[s], run.layers, n_layers=depth)
                frame.insert(0, "step", s)
                frame.insert(0, "mode", run.mask)
                frame.insert(0, "run", run.name)
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "mode", "step", *ENTROPY_COLUMNS])
    h = layer_entropy(source)
    layers = layer_labels(source, len(h)) if layers is None else [int(l) for l in layers]
    if len(layers) != len(h):
        raise InvalidInputError(f"{len(layers)} layer labels for {len(h)} captured layers")
    n_layers = max(layers) + 1 if n_layers is None else int(n_layers)
    return pd.DataFrame(
        {
            "layer": layers,
            "entropy": h,
            "group": entropy_groups(h),
            "depth": [depth_third(l, n_layers) for l in layers],
        }
    )


def _is_runs(source: Any) -> bool:
    """Runs, results or an experiment rather than one step's array."""
    if hasattr(source, "layout") or hasattr(source, "runs"):
        return True
    return isinstance(source, (list, tuple)) and bool(source) and hasattr(source[0], "layout")


ENTROPY_COLUMNS = ["layer", "entropy", "group", "depth"]


def depth_pattern(table: pd.DataFrame) -> pd.DataFrame:
    """Per depth third (early, middle, late): first and last layer, n_layers, min / max / mean entropy."""
    rows = []
    for depth in DEPTHS:
        part = table[table["depth"] == depth]
        if part.empty:
            continue
        rows.append(
            dict(
                depth=depth,
                first_layer=int(part["layer"].min()),
                last_layer=int(part["layer"].max()),
                n_layers=len(part),
                min=part["entropy"].min(),
                max=part["entropy"].max(),
                mean=part["entropy"].mean(),
            )
        )
    return pd.DataFrame(rows, columns=["depth", "first_layer", "last_layer", "n_layers", "min", "max", "mean"])


def entropy_by_step(run: Any, steps: Sequence[int] | None = None) -> pd.DataFrame:
    """Long format (run, mode, step, layer, entropy) over a run's (or result's) captured steps, for the figures."""
    run = as_run(run)
    chosen = run.step_ids if steps is None else list(steps)
    frames = [
        pd.DataFrame(
            {
                "run": run.name,
                "mode": run.mode,
                "step": step,
                "layer": list(run.layers),
                "entropy": layer_entropy(run.step_array(step)),
            }
        )
        for step in chosen
    ]
    if not frames:
        return pd.DataFrame(columns=["run", "mode", "step", "layer", "entropy"])
    return pd.concat(frames, ignore_index=True)
