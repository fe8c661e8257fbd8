"""Distance-matched ratio: each parallel key against non-parallel keys at the same logical distance.

Attention falls with distance, and every parallel key is a generated token close to the query while
the plain ratio's "other" bucket is mostly prompt, far away. This control holds distance fixed.

At step ``s`` the queries sit at logical position ``P + s``; a key's **logical distance** is
``P + s - logical_position(key)``. For each counted parallel key ``k`` (before the step's first
sibling, not hidden) its **matches** are the counted keys that are not parallel, not physical
position 0, and whose logical distance differs from ``k``'s by at most :data:`DISTANCE_WINDOW`
(the bin rule). The window cannot be 0: the only other keys at ``k``'s own logical position are its
siblings, which are parallel. ``baseline(k)`` is the mean weight of ``k``'s matches, and

    ratio = mean over matched k of a[k] / mean over matched k of baseline(k)

over the parallel keys that have at least one match (a ratio of means, like the plain ratio). A step
with no parallel key that has a match carries :data:`NO_MATCH`. Runs average their measured steps
(:func:`~.ratios.mode_averages`), and prompts average their runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float, Int

from ..capture import as_runs
from ..layout import TokenLayout
from ._arrays import step_attention
from .ratios import NO_OTHER_ATTENTION, NO_PARALLEL, STEP_RATIO_COLUMNS, key_buckets, measurable

DISTANCE_WINDOW = 1  # logical distances within this of a parallel key's count as "the same distance"
NO_MATCH = "no distance-matched other keys"
MATCHED_COLUMNS = [*STEP_RATIO_COLUMNS, "matched_mean", "n_matched_parallel", "missing_reason"]


def logical_distance(layout: TokenLayout, step: int) -> Int[np.ndarray, " key"]:
    """Logical distance from ``step``'s queries to every key ``0..first-1`` (first = the step's first sibling)."""
    first = layout.step_range(step).start
    positions = np.asarray(layout.logical_positions[:first], dtype=np.int64)
    return int(layout.logical_positions[first]) - positions


@dataclass(frozen=True)
class DistanceMatch:
    """The parallel keys of one step that have matches, and which keys match each (rows of ``matches``)."""

    step: int
    first: int
    parallel_keys: Int[np.ndarray, " n_matched"]
    matches: Bool[np.ndarray, "n_matched key"]
    has_parallel: bool

    @property
    def n_matched(self) -> int:
        return len(self.parallel_keys)


def distance_match(layout: TokenLayout, step: int, window: int = DISTANCE_WINDOW) -> DistanceMatch:
    """Each counted parallel key's distance-matched keys (see the module docstring for the bin rule)."""
    buckets = key_buckets(layout, step, exclude_first=True)
    distance = logical_distance(layout, step)
    parallel = np.flatnonzero(buckets.parallel)
    matches = buckets.other[None, :] & (np.abs(distance[None, :] - distance[parallel, None]) <= window)
    keep = matches.any(axis=1)
    return DistanceMatch(step, buckets.first, parallel[keep], matches[keep], bool(len(parallel)))


def matched_ratio_weights(weights: Float[np.ndarray, "*group key"], match: DistanceMatch) -> dict[str, np.ndarray]:
    """Parallel mean, matched mean and ratio for each row of ``weights`` (keys ``0..first-1``); NaN where missing."""
    w = np.asarray(weights, dtype=np.float64)[..., : match.first]
    if match.n_matched == 0:
        nan = np.full(w.shape[:-1], np.nan)
        return dict(ratio=nan, parallel_mean=nan, matched_mean=nan)
    parallel_mean = w[..., match.parallel_keys].mean(-1)
    baseline = (w @ match.matches.T.astype(np.float64)) / match.matches.sum(axis=1)
    matched_mean = baseline.mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(measurable(matched_mean), parallel_mean / matched_mean, np.nan)
    return dict(ratio=ratio, parallel_mean=parallel_mean, matched_mean=matched_mean)


def _reason(match: DistanceMatch, matched_mean: float) -> str | None:
    if not match.has_parallel:
        return NO_PARALLEL
    if match.n_matched == 0:
        return NO_MATCH
    return None if measurable(matched_mean) else NO_OTHER_ATTENTION


def distance_matched_ratio(attention: Any, layout: TokenLayout, step: int, window: int = DISTANCE_WINDOW) -> dict[str, Any]:
    """One step's distance-matched ratio: step, ratio, parallel_mean, matched_mean, n_matched_parallel, missing_reason."""
    a, _ = step_attention(attention, layout, step)
    match = distance_match(layout, step, window)
    r = {k: float(v) for k, v in matched_ratio_weights(a.mean(axis=(0, 1, 2, 3), dtype=np.float64), match).items()}
    reason = _reason(match, r["matched_mean"])
    if reason is not None:
        r = dict.fromkeys(r, float("nan"))
    return dict(step=step, **r, n_matched_parallel=match.n_matched, missing_reason=reason)


def matched_ratio_table(runs: Iterable[Any], window: int = DISTANCE_WINDOW) -> pd.DataFrame:
    """One row per (run, captured step >= 0), the columns of :data:`MATCHED_COLUMNS`; :func:`~.ratios.mode_averages` reads it."""
    rows = []
    for run in as_runs(runs):
        for step in run.step_ids:
            rows.append(
                dict(
                    run=run.name,
                    prompt=run.prompt,
                    mode=run.mode,
                    **distance_matched_ratio(run.attention[step], run.layout, step, window),
                )
            )
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)
