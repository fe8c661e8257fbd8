"""A regression over (query, key) pairs: how much of the parallel effect is distance and token kind.

Every captured step contributes one row per (query sibling, key it can see), the query's own key
left out. The response is ``log(max(a, FLOOR))``, with ``a`` the attention averaged over layers,
batch and heads (the weight the ratio uses, per query row). The terms:

- ``parallel``: the key belongs to a parallel set (an earlier one, or the query's own step);
- ``log_distance``: ``log(1 + logical distance)`` from the query to the key (0 for a sibling);
- ``prompt``: the key is a prompt token; ``first``: the key is physical position 0;
- ``sibling``: the key is a sibling of the query in its own step (visible mode only; isolated hides them).

Fits are ordinary least squares by :func:`numpy.linalg.lstsq`; the bootstrap's refits use the same
call on each run's rows compressed to their QR factor (:func:`_refits`: the same solution, computed
from a few rows per run instead of every pair). The coefficient of ``parallel`` is a
log factor: ``exp(beta)`` is how many times more attention a parallel key gets, the other terms held
fixed. The **raw effect** is that coefficient with ``parallel`` and ``first`` only (the first token
held fixed, as in the sink-excluded ratio the report's headline quotes); ``prompt``, ``log_distance``
and ``sibling`` are then added one at a time in that order, and each one's **share of the raw effect**
is how far it moves the parallel coefficient, over the raw coefficient (order matters; it is fixed).
The response is a log, so these are effects on the geometric mean, where the ratios use the
arithmetic mean: a few heavily attended keys move a ratio more than a coefficient. Intervals resample prompts
(runs) with replacement: each resample refits on the chosen runs, a run drawn twice counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..capture import as_runs
from ..lookup import FindBy
from ._arrays import step_attention

Term = Literal["parallel", "first", "prompt", "log_distance", "sibling"]
TERMS: tuple[Term, ...] = get_args(Term)  # also the order in which terms join the model
FLOOR = 1e-6  # attention below this is read as this before the log (near-zero weights would dominate)
N_BOOT = 1000
RAW_TERMS: tuple[Term, ...] = ("parallel", "first")  # the raw effect: the first token held fixed, as the sink control does
PAIR_COLUMNS = ["run", "mode", "step", "query", "key", "attention", *TERMS]


def _step_pairs(run: Any, step: int) -> tuple[pd.DataFrame, Float[np.ndarray, "pair layer head_index"]]:
    """The pairs of one captured step (columns :data:`PAIR_COLUMNS`) and each pair's weight per (layer, head)."""
    layout = run.layout
    steps = np.asarray(layout.steps)
    positions = np.asarray(layout.logical_positions)
    parallel = layout.parallel_tensor().numpy()
    a, siblings = step_attention(run.attention[step], layout, step)
    per_head = a.mean(axis=1)  # [layer, head, query, key]
    n_queries, n_keys = per_head.shape[-2:]
    seen = ~layout.blocked(run.mode, n_queries=n_queries, n_keys=n_keys).numpy()
    seen[np.arange(n_queries), np.asarray(siblings)] = False
    q, k = np.nonzero(seen)
    query = np.asarray(siblings)[q]
    heads = per_head[:, :, q, k]  # [layer, head, pair]
    frame = pd.DataFrame(
        {
            "run": run.name,
            "mode": run.mode,
            "step": step,
            "query": query,
            "key": k,
            "attention": heads.mean(axis=(0, 1), dtype=np.float64),
            "parallel": parallel[k].astype(np.float64),
            "first": (k == 0).astype(np.float64),
            "prompt": (steps[k] < 0).astype(np.float64),
            "log_distance": np.log1p(positions[query] - positions[k]),
            "sibling": (steps[k] == step).astype(np.float64),
        }
    )
    return frame, np.moveaxis(heads, -1, 0)


def pair_table(runs: Iterable[Any]) -> pd.DataFrame:
    """One row per (run, step, query sibling, visible key other than the query itself); columns :data:`PAIR_COLUMNS`.

    Visibility follows the run's mode and pruning (:meth:`TokenLayout.blocked`).
    """
    frames = [_step_pairs(run, step)[0] for run in as_runs(runs) for step in run.step_ids]
    if not frames:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    return pd.concat(frames, ignore_index=True)[PAIR_COLUMNS]


def head_parallel_coefficients(runs: Iterable[Any]) -> Float[np.ndarray, "layer head_index"]:
    """Per captured (layer, head): the ``parallel`` coefficient of the full model fitted to that head's weights alone.

    One :func:`numpy.linalg.lstsq` call with a column of responses per head; NaN when no parallel key was seen.
    """
    parts = [_step_pairs(run, step) for run in as_runs(runs) for step in run.step_ids]
    if not parts:
        return np.empty((0, 0))
    pairs = pd.concat([p[0] for p in parts], ignore_index=True)
    heads = np.concatenate([p[1] for p in parts])  # [pair, layer, head]
    shape = heads.shape[1:]
    if pairs["parallel"].nunique() < 2:
        return np.full(shape, np.nan)
    used = varying_terms(pairs, TERMS)
    x, _ = _design(pairs, used)
    y = np.log(np.maximum(heads.reshape(len(pairs), -1).astype(np.float64), FLOOR))
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    return beta[1 + used.index("parallel")].reshape(shape)


def _design(pairs: pd.DataFrame, terms: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix (intercept first, then ``terms``) and the response ``log(max(a, FLOOR))``."""
    x = np.column_stack([np.ones(len(pairs)), *(pairs[t].to_numpy(np.float64) for t in terms)])
    y = np.log(np.maximum(pairs["attention"].to_numpy(np.float64), FLOOR))
    return x, y


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]


def _refits(x: np.ndarray, y: np.ndarray, counts: np.ndarray, run_index: np.ndarray) -> np.ndarray:
    """Least-squares coefficients for each resample (``counts[resample, run]``: how often each run was drawn).

    Every run's rows are first replaced by their QR factor: with ``X_r = Q_r R_r``, the problem
    ``min sum_r c_r |y_r - X_r b|^2`` has the same solution as ``min sum_r c_r |Q_r' y_r - R_r b|^2`` (what
    ``Q_r`` leaves out does not depend on ``b``), so each refit is :func:`numpy.linalg.lstsq` on at most
    ``columns`` rows per drawn run, scaled by the square root of its count, instead of on every pair.
    """
    blocks = []
    for r in range(counts.shape[1]):
        q, factor = np.linalg.qr(x[run_index == r])
        blocks.append((factor, q.T @ y[run_index == r]))
    out = np.empty((len(counts), x.shape[1]))
    for i, c in enumerate(counts):
        drawn = [(np.sqrt(c[r]) * f, np.sqrt(c[r]) * t) for r, (f, t) in enumerate(blocks) if c[r] > 0]
        out[i] = np.linalg.lstsq(np.vstack([f for f, _ in drawn]), np.concatenate([t for _, t in drawn]), rcond=None)[0]
    return out


def varying_terms(pairs: pd.DataFrame, terms: Iterable[str]) -> list[str]:
    """The terms that take more than one value in ``pairs`` (a constant one cannot be separated from the intercept)."""
    return [t for t in terms if pairs[t].nunique() > 1]


def fit(pairs: pd.DataFrame, terms: Iterable[str]) -> dict[str, float]:
    """Least-squares coefficients (``intercept`` and each term) of log attention on ``terms``.

    A term that never varies in ``pairs`` (e.g. ``sibling`` in isolated mode) is left out and reported as NaN.
    """
    terms = list(terms)
    used = varying_terms(pairs, terms)
    beta = _lstsq(*_design(pairs, used))
    out = dict.fromkeys(["intercept", *terms], float("nan"))
    out.update(zip(["intercept", *used], (float(b) for b in beta)))
    return out


@dataclass
class Coefficient:
    """One term's coefficient in the full model, with its interval from resampling prompts (None: not enough resamples)."""

    term: str
    estimate: float | None
    lo: float | None = None
    hi: float | None = None


@dataclass
class RegressionResult:
    """The full model's coefficients, the raw parallel effect, and each term's share of it (sequential)."""

    n_pairs: int
    n_runs: int
    coefficients: list[Coefficient]
    raw: Coefficient
    shares: dict[str, float | None]

    coefficient = FindBy[Coefficient]("coefficients", "term")


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def sequential_shares(pairs: pd.DataFrame) -> tuple[float, dict[str, float | None]]:
    """The raw parallel coefficient (:data:`RAW_TERMS`) and, for each later term added in :data:`TERMS` order, its share of it."""
    raw = fit(pairs, RAW_TERMS)["parallel"]
    shares: dict[str, float | None] = {}
    previous, terms = raw, list(RAW_TERMS)
    varying = varying_terms(pairs, TERMS)
    for term in TERMS[len(RAW_TERMS) :]:
        if term not in varying:
            shares[term] = None  # constant here (sibling in isolated mode): it explains nothing and is not fitted
            continue
        terms.append(term)
        now = fit(pairs, terms)["parallel"]
        shares[term] = _num((previous - now) / raw) if raw else None
        previous = now
    return raw, shares


def attention_regression(pairs: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0, ci: float = 0.95) -> RegressionResult | None:
    """Fit the full model and the raw effect, with percentile intervals over ``n_boot`` resamples of the runs.

    None when there are no pairs or no parallel key among them.
    """
    if pairs.empty or pairs["parallel"].nunique() < 2:
        return None
    runs, run_index = np.unique(pairs["run"].to_numpy(), return_inverse=True)
    used = varying_terms(pairs, TERMS)
    x, y = _design(pairs, used)
    raw_columns = [0, *(1 + used.index(t) for t in RAW_TERMS if t in used)]
    full = fit(pairs, TERMS)
    raw, shares = sequential_shares(pairs)
    rng = np.random.default_rng(seed)
    n = n_boot if len(runs) >= 2 else 0
    counts = np.zeros((n, len(runs)))
    for i in range(n):
        counts[i] = np.bincount(rng.integers(0, len(runs), len(runs)), minlength=len(runs))
    # a resample without both parallel and non-parallel pairs cannot estimate the effect: left out
    parallel = x[:, raw_columns[1]]
    has_parallel = np.bincount(run_index, weights=parallel, minlength=len(runs)) > 0
    has_other = np.bincount(run_index, weights=1 - parallel, minlength=len(runs)) > 0
    counts = counts[(counts @ has_parallel > 0) & (counts @ has_other > 0)]
    draws_full = list(_refits(x, y, counts, run_index))
    draws_raw = list(_refits(x[:, raw_columns], y, counts, run_index)[:, 1])
    tail = (1 - ci) / 2 * 100

    def bounds(values: list[float]) -> tuple[float | None, float | None]:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            return None, None
        lo, hi = np.percentile(v, [tail, 100 - tail])
        return float(lo), float(hi)

    column = {name: i for i, name in enumerate(["intercept", *used])}
    coefficients = [
        Coefficient(t, _num(full[t]), *(bounds([d[column[t]] for d in draws_full]) if t in column else (None, None)))
        for t in ("intercept", *TERMS)
    ]
    return RegressionResult(
        n_pairs=len(pairs),
        n_runs=len(runs),
        coefficients=coefficients,
        raw=Coefficient("parallel (raw)", _num(raw), *bounds(draws_raw)),
        shares=shares,
    )
