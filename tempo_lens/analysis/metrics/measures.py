"""Small measurements shared by the metric builders: intervals, per-run means, sibling preference.

An :class:`~.schema.Interval` is always a mean of one value per run with its 95 % studentized-bootstrap
interval and a two-sided sign-flip permutation p-value against its null (1 for ratios, tested on log
ratios; 0 for differences); runs without a measurable value are counted, not averaged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ...capture import CapturedRun
from .. import (
    bootstrap_ci,
    depth_pattern,
    layer_entropy,
    layer_entropy_table,
    mode_averages,
    paired_permutation_test,
    ratio_table,
)
from ..distance import matched_ratio_table
from ..ratios import measurable
from ..stats import log_ratio_test, paired_log_ratio_test
from .codec import clean
from .schema import Interval


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    """Choices of one study's report; the defaults are the reference report's."""

    entropy_step: int = 1  # the step of the entropy and head tables (the reference report used step 1)


def fnum(value: Any) -> float | None:
    """A float, or None for None / NaN / infinity (the schema's "not measured")."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def interval(values: Iterable[float | None], null: float = 1.0, *, test: bool = True, ci: float = 0.95) -> Interval:
    """Mean, bootstrap interval and (``test``) a sign-flip p of one value per run; NaN / None runs are counted as n/a.

    A ratio (``null`` 1) is tested on its logs (:func:`~tempo_lens.analysis.stats.log_ratio_test`), a difference
    (``null`` 0) on its values. ``ci``: the interval's level (0.95; higher where a family of measures is corrected).
    """
    given = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    x = given[~np.isnan(given)]
    mean, lo, hi = bootstrap_ci(x, ci=ci)
    p, statistic = float("nan"), float("nan")
    if test and len(x) >= 2:
        if null == 1.0:
            p, statistic = log_ratio_test(x)
        else:
            p, statistic = paired_permutation_test(x, np.full_like(x, null)), float(x.mean() - null)
    return _interval(mean, lo, hi, len(x), p, null, len(given) - len(x), statistic)


def _interval(mean: float, lo: float, hi: float, n: int, p: float, null: float, n_na: int, statistic: float) -> Interval:
    side = None if fnum(p) is None or statistic == 0 or math.isnan(statistic) else ("less" if statistic < 0 else "more")
    return Interval(
        mean=fnum(mean), lo=fnum(lo), hi=fnum(hi), n=int(n), p=fnum(p), null=null, n_na=int(n_na), test_direction=side
    )


def point_estimate(values: Iterable[float], null: float = 1.0) -> Interval:
    """The mean of ``values`` from one or two runs (steps, sets): no interval and no test, since they are not
    independent samples; ``n`` counts the values."""
    x = np.asarray(list(values), dtype=np.float64)
    x = x[~np.isnan(x)]
    return Interval(mean=fnum(x.mean()) if len(x) else None, n=int(len(x)), null=null)


def paired(a: Iterable[float | None], b: Iterable[float | None], *, ratios: bool = True, ci: float = 0.95) -> Interval:
    """The paired difference ``a - b`` (one pair per run; pairs with a NaN are n/a) against 0.

    ``ratios``: ``a`` and ``b`` are ratios, so the sign-flip test acts on ``log a - log b``
    (:func:`~tempo_lens.analysis.stats.paired_log_ratio_test`); otherwise on ``a - b``.
    """
    a = np.asarray([np.nan if v is None else v for v in a], dtype=np.float64)
    b = np.asarray([np.nan if v is None else v for v in b], dtype=np.float64)
    if not ratios:
        return interval(a - b, null=0.0, ci=ci)
    d = a - b
    x = d[~np.isnan(d)]
    mean, lo, hi = bootstrap_ci(x, ci=ci)
    p, statistic = paired_log_ratio_test(a, b) if len(x) >= 2 else (float("nan"), float("nan"))
    return _interval(mean, lo, hi, len(x), p, 0.0, len(d) - len(x), statistic)


def records(df: pd.DataFrame, cls: type, **fixed: Any) -> list:
    """Rows of ``df`` as ``cls`` instances (only the dataclass's fields are taken; NaN becomes None)."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in fixed]
    return [cls(**fixed, **{k: clean(row[k]) for k in names}) for row in df.to_dict(orient="records")]


def mean_ratio_by_run(runs: list[CapturedRun], **kwargs: Any) -> dict[str, float]:
    """Each run's mean over its measured per-step ratios (NaN when it has none)."""
    if not runs:
        return {}
    averages = mode_averages(ratio_table(runs, **kwargs))
    return dict(zip(averages["run"], averages["ratio"]))


def mean_matched_by_run(runs: list[CapturedRun]) -> dict[str, float]:
    """Each run's mean over its measured per-step distance-matched ratios (NaN when it has none)."""
    if not runs:
        return {}
    averages = mode_averages(matched_ratio_table(runs))
    return dict(zip(averages["run"], averages["ratio"]))


def sibling_preference(run: CapturedRun) -> list[float]:
    """Per (step, earlier parallel set): attention to the less likely siblings / to the most likely one."""
    values = []
    layout = run.layout
    for step, attention in sorted(run.attention.items()):
        a = attention.mean(axis=(0, 1, 2, 3), dtype=np.float64)
        for earlier in layout.parallel_steps():
            if earlier >= step:
                break
            members = [k for k in layout.step_range(earlier) if not layout.is_hidden(k, step)]
            if len(members) < 2 or not measurable(a[members[0]]):
                continue  # the top sibling's weight below the floor: the ratio is not measurable
            values.append(float(a[members[1:]].mean() / a[members[0]]))
    return values


def entropy_step_of(run: CapturedRun, preferred: int = MetricsSettings.entropy_step) -> int | None:
    """The ``preferred`` step (the settings' ``entropy_step``), else the last captured step (None when nothing was captured)."""
    if preferred in run.attention:
        return preferred
    return max(run.step_ids) if run.step_ids else None


def run_depth(run: CapturedRun, n_layers: int) -> pd.DataFrame | None:
    """The depth-third table (:func:`~tempo_lens.analysis.depth_pattern`) of one run's layer entropy averaged over every
    captured step (None when nothing was captured)."""
    if not run.step_ids:
        return None
    h = np.mean([layer_entropy(run.attention[s]) for s in run.step_ids], axis=0)
    table = layer_entropy_table(run.attention[run.step_ids[0]], run.layers, n_layers=n_layers).assign(entropy=h)
    return depth_pattern(table)
