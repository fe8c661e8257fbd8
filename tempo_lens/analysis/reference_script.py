"""The parallel : non-parallel ratio as the reference report's own analysis script computed it.

The reference report's ratio came from a script that differs from the intended definition
(:mod:`.ratios`) in five ways (``docs/definitions.md``, "The reference script's ratio"):

1. ``head_zero``: it indexed head 0 where it meant to average over heads;
2. ``shifted_steps``: its step ``s`` is the forward pass that produced step ``s``'s distribution, whose
   query is the last token of step ``s - 1``: reference step ``s`` = this project's step ``s - 1``;
3. ``own_step_keys``: the keys of the query's own step (its own key, its siblings, hidden ones
   included) enter the buckets, and with shifted steps that own step counts as an *earlier* parallel set;
4. ``last_row``: one query row, the last sibling (the only one the reference fed);
5. ``steps``: the average is over reference steps 3-6 only.

:class:`ScriptDefinition` switches each choice on or off, so the reference's number and ours are two
ends of one chain (:data:`UNDO_CHAIN`), and every intermediate step shows how much each choice moves
the ratio. With every choice off the result equals :func:`tempo_lens.analysis.parallel_ratio`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..layout import TokenLayout
from ._arrays import step_attention
from .ratios import measurable

REFERENCE_STEPS = (3, 4, 5, 6)


@dataclass(frozen=True)
class ScriptDefinition:
    """Which of the reference script's five choices apply (True / ``REFERENCE_STEPS``: as the script did)."""

    head_zero: bool = True
    shifted_steps: bool = True
    own_step_keys: bool = True
    last_row: bool = True
    steps: tuple[int, ...] | None = REFERENCE_STEPS  # labels averaged; None = every measurable step


REFERENCE_SCRIPT = ScriptDefinition()
INTENDED = ScriptDefinition(head_zero=False, shifted_steps=False, own_step_keys=False, last_row=False, steps=None)

# Undo the script's choices one at a time, in this order; the last entry is the intended definition.
UNDO_CHAIN: tuple[tuple[str, ScriptDefinition], ...] = (
    ("reference script (head 0, shifted steps, own-step keys, last row, steps 3-6)", REFERENCE_SCRIPT),
    ("+ every measurable step", replace(REFERENCE_SCRIPT, steps=None)),
    ("+ every head", replace(REFERENCE_SCRIPT, steps=None, head_zero=False)),
    ("+ this project's step labels", replace(REFERENCE_SCRIPT, steps=None, head_zero=False, shifted_steps=False)),
    ("+ every query row", replace(INTENDED, own_step_keys=True)),
    ("+ only keys before the step (intended definition)", INTENDED),
)


def script_ratio(attention: Any, layout: TokenLayout, step: int, definition: ScriptDefinition = REFERENCE_SCRIPT) -> float:
    """The ratio of this project's forward pass ``step`` under ``definition``; NaN when a bucket is empty.

    Parallel bucket: keys of parallel sets (steps with >= 2 siblings) whose step is before the label
    (``step + 1`` with shifted steps, else ``step``). Other bucket: every remaining key counted. Keys
    counted: before the step's first sibling, or through its last one with ``own_step_keys``; keys
    pruned before ``step`` are never counted.
    """
    a, siblings = step_attention(attention, layout, step)
    heads = a[:, :, :1] if definition.head_zero else a
    rows = heads[..., -1:, :] if definition.last_row else heads
    weights: Float[np.ndarray, " key"] = rows.mean(axis=(0, 1, 2, 3), dtype=np.float64)
    end = siblings.stop if definition.own_step_keys else siblings.start
    label = step + 1 if definition.shifted_steps else step
    key_steps = layout.steps_tensor().numpy()[:end]
    counted = ~layout.hidden_tensor(step).numpy()[:end]
    parallel = counted & layout.parallel_tensor().numpy()[:end] & (key_steps >= 0) & (key_steps < label)
    other = counted & ~parallel
    if not parallel.any() or not other.any():
        return float("nan")
    other_mean = weights[:end][other].mean()
    return float(weights[:end][parallel].mean() / other_mean) if measurable(other_mean) else float("nan")


def _per_step(run: Any, definition: ScriptDefinition) -> Iterator[tuple[int, int, float, bool]]:
    """(step, label, ratio, averaged) for each captured step of ``run`` under ``definition``."""
    for step in run.step_ids:
        label = step + 1 if definition.shifted_steps else step
        ratio = script_ratio(run.attention[step], run.layout, step, definition)
        chosen = definition.steps is None or label in definition.steps
        yield step, label, ratio, bool(chosen and not np.isnan(ratio))


def script_ratio_table(run: Any, definition: ScriptDefinition = REFERENCE_SCRIPT) -> pd.DataFrame:
    """One row per captured step of ``run``: step (this project's), label (the definition's), ratio, averaged."""
    return pd.DataFrame(list(_per_step(run, definition)), columns=["step", "label", "ratio", "averaged"])


def script_average(run: Any, definition: ScriptDefinition = REFERENCE_SCRIPT) -> float:
    """Mean of the per-step ratios the definition averages (NaN when none is measurable)."""
    chosen = [ratio for _, _, ratio, averaged in _per_step(run, definition) if averaged]
    return float(np.mean(chosen)) if chosen else float("nan")


def undo_chain_table(runs: Any) -> pd.DataFrame:
    """For each run (mode) and each entry of :data:`UNDO_CHAIN`: run, mode, order, definition, ratio."""
    rows = []
    for run in runs:
        for order, (label, definition) in enumerate(UNDO_CHAIN):
            rows.append(dict(run=run.name, mode=run.mode, order=order, definition=label, ratio=script_average(run, definition)))
    return pd.DataFrame(rows, columns=["run", "mode", "order", "definition", "ratio"])
