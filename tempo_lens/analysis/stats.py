"""Uncertainty for multi-prompt results: bootstrap intervals, paired permutation tests, direction words.

One run (prompt) is one sample: every interval and test resamples one value per run, never steps,
tokens or sets of one run. The report states multi-prompt means with a 95 % studentized-bootstrap
interval and a two-sided sign-flip permutation test, which acts on log ratios for ratios
(:func:`log_ratio_test`, :func:`paired_log_ratio_test`; a ratio and its reciprocal are equally likely
under "no preference", a ratio minus 1 is not symmetric), and picks its words ("less" / "more" /
"no reliable difference") from the interval in the multi-prompt section and from the point estimate in single-run tables (``docs/definitions.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from ..errors import InvalidInputError

LESS, MORE = "less", "more"
NO_RELIABLE = "no reliable difference"
NO_DIFFERENCE = "no difference"
NOT_MEASURED = "not measured"
RATIO_NULL = 1.0
DIFFERENCE_NULL = 0.0
EXACT_LIMIT = 2**16  # enumerate every sign pattern when there are at most this many


def _numbers(values: Any, what: str = "values") -> np.ndarray:
    """A flat float64 array, or a clear error for text and other non-numbers."""
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be numbers, got {type(values).__name__}") from None


def _clean(values: Any) -> np.ndarray:
    x = _numbers(values)
    return x[~np.isnan(x)]


def _check_resampling(n: object, name: str, ci: float = 0.5) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {n!r}")
    if not (isinstance(ci, (int, float)) and 0.0 < ci < 1.0):
        raise InvalidInputError(f"ci must be a level in (0, 1), e.g. 0.95, got {ci!r}")


IntervalMethod = Literal["studentized", "percentile"]
"""How :func:`bootstrap_ci` turns resampled means into an interval: the studentized (bootstrap-t) interval, which
keeps its 95 % coverage at a dozen runs and under skew, or the plain percentile interval, which falls to about
90 % at 13 runs (``tests/analysis/test_coverage.py`` measures both)."""


def bootstrap_ci(
    values: Any, n_boot: int = 10000, ci: float = 0.95, seed: int = 0, method: IntervalMethod = "studentized"
) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and its bootstrap interval (one value per run); NaNs are dropped.

    ``method="studentized"``: each resample's mean minus the sample mean over the resample's standard error
    gives ``t*``; the interval is ``mean - t*_(hi) se, mean - t*_(lo) se``. A resample of one repeated value has no
    spread: its ``t*`` is infinite on its side, so with 2 or 3 values the interval is unbounded and reported
    as none (NaN). No values: all NaN; fewer than 2 values: the mean with ``lo = hi = nan``; identical values:
    ``lo = hi = mean``.
    """
    _check_resampling(n_boot, "n_boot", ci)
    if method not in get_args(IntervalMethod):
        raise InvalidInputError(f"method must be one of {get_args(IntervalMethod)}, got {method!r}")
    x = _clean(values)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, len(x), size=(n_boot, len(x)))]
    means = draws.mean(axis=1)
    tail = (1.0 - ci) / 2 * 100
    if method == "percentile":
        lo, hi = np.percentile(means, [tail, 100 - tail])
        return mean, float(lo), float(hi)
    se = float(x.std(ddof=1)) / np.sqrt(len(x))
    if se <= 1e-12 * max(1.0, abs(mean)):
        return mean, mean, mean
    spread = draws.std(axis=1, ddof=1) / np.sqrt(len(x))
    deviation = means - mean
    flat = spread <= 1e-9 * se
    t = np.where(flat, np.copysign(np.inf, deviation), deviation / np.where(flat, 1.0, spread))
    t[flat & (deviation == 0)] = 0.0
    t_lo, t_hi = np.percentile(np.sort(t), [tail, 100 - tail], method="nearest")
    if not (np.isfinite(t_lo) and np.isfinite(t_hi)):
        return mean, float("nan"), float("nan")
    return mean, float(mean - t_hi * se), float(mean - t_lo * se)


def paired_permutation_test(a: Any, b: Any, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip test of mean(a - b) = 0 on paired samples; pairs with a NaN are dropped.

    Exact (every sign pattern) when ``2**n <= max(n_perm, 65536)``; otherwise ``n_perm`` random flips
    with the observed statistic counted, ``p = (1 + #{|flipped| >= |observed|}) / (n_perm + 1)``.
    Identical samples give p = 1; no pairs give NaN.
    """
    _check_resampling(n_perm, "n_perm")
    a, b = _numbers(a, "a"), _numbers(b, "b")
    if a.shape != b.shape:
        raise InvalidInputError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    d = a - b
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return float("nan")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if 2**n <= max(n_perm, EXACT_LIMIT):
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)
        return float(np.mean(np.abs(signs @ d / n) >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_perm, n))
    hits = int(np.sum(np.abs(signs @ d / n) >= observed - tol))
    return (1 + hits) / (n_perm + 1)


def log_ratio_test(ratios: Any, n_perm: int = 10000, seed: int = 0) -> tuple[float, float]:
    """(p, mean log ratio): the sign-flip test of ``mean(log r) = 0`` over one ratio per run; NaNs dropped.

    A ratio at or below 0 has no log: then, and with fewer than 2 ratios, ``(nan, nan)`` (not tested).
    """
    r = _clean(ratios)
    if len(r) < 2 or (r <= 0).any() or not np.isfinite(r).all():
        return float("nan"), float("nan")
    logs = np.log(r)
    return paired_permutation_test(logs, np.zeros_like(logs), n_perm=n_perm, seed=seed), float(logs.mean())


def paired_log_ratio_test(a: Any, b: Any, n_perm: int = 10000, seed: int = 0) -> tuple[float, float]:
    """(p, mean of log(a / b)): the sign-flip test of paired ratios, per pair ``log a - log b``; pairs with a NaN dropped.

    ``(nan, nan)`` with fewer than 2 pairs or a ratio at or below 0.
    """
    a, b = _numbers(a, "a"), _numbers(b, "b")
    if a.shape != b.shape:
        raise InvalidInputError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2 or (a <= 0).any() or (b <= 0).any() or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan"), float("nan")
    d = np.log(a) - np.log(b)
    return paired_permutation_test(d, np.zeros_like(d), n_perm=n_perm, seed=seed), float(d.mean())


def holm(pvalues: Sequence[float | None]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (None / NaN: no test, left NaN and not counted).

    Sorted ascending, ``p_(j)`` becomes ``max over i <= j of min(1, (m - i + 1) p_(i))`` with ``m`` the tests given:
    rejecting where the adjusted p is below alpha keeps the chance of any false rejection in the family at alpha.
    """
    p = np.asarray([np.nan if v is None else v for v in pvalues], dtype=np.float64)
    tested = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), np.nan)
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted) if m else adjusted
    return [float(v) for v in out]


def direction_from_estimate(estimate: float | None, null: float = RATIO_NULL) -> str:
    """ "less" / "more" than ``null`` from a point estimate ("no difference" when equal, "not measured" if NaN)."""
    if estimate is None or np.isnan(estimate):
        return NOT_MEASURED
    if estimate < null:
        return LESS
    return MORE if estimate > null else NO_DIFFERENCE


def direction_from_interval(lo: float | None, hi: float | None, null: float = RATIO_NULL) -> str:
    """ "less" / "more" only when the whole interval is on one side of ``null``, else "no reliable difference"."""
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return NO_RELIABLE
    if hi < null:
        return LESS
    return MORE if lo > null else NO_RELIABLE


def direction_word(
    estimate: float | None = None, lo: float | None = None, hi: float | None = None, *, null: float = RATIO_NULL
) -> str:
    """From the interval when ``lo``/``hi`` are given, else from the point estimate.

    ``null`` is 1 for ratios and 0 for differences.
    """
    if lo is not None or hi is not None:
        return direction_from_interval(lo, hi, null)
    return direction_from_estimate(estimate, null)


def ci_summary(
    df: pd.DataFrame,
    value: str = "ratio",
    by: str | Sequence[str] = "mode",
    *,
    n_boot: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
    null: float = RATIO_NULL,
    unit: str = "run",
) -> pd.DataFrame:
    """Per group of ``by``: n, mean, lo, hi of ``value`` (bootstrap) and the direction word from the interval.

    This is the frame :func:`tempo_lens.figures.ratio_ci_figure` draws. The interval resamples one value per
    ``unit``: when ``df`` has that column (a per-step ratio table has ``run``), each unit's rows are averaged
    first (NaN rows skipped), so ``n`` counts runs, not steps; without it each row is taken as one unit.
    """
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for group, part in df.groupby(keys, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        if unit in part and unit not in keys:
            part = part.groupby(unit, sort=False)[[value]].mean()
        values = _clean(part[value])
        mean, lo, hi = bootstrap_ci(values, n_boot=n_boot, ci=ci, seed=seed)
        rows.append(
            dict(zip(keys, group), n=len(values), mean=mean, lo=lo, hi=hi, direction=direction_from_interval(lo, hi, null))
        )
    return pd.DataFrame(rows, columns=[*keys, "n", "mean", "lo", "hi", "direction"])
