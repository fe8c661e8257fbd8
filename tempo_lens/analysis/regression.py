"""A regression over (query, key) pairs: how much of the parallel effect is distance and token kind.

Every captured step contributes one row per (query sibling, key it can see), the query's own key
left out. The response is ``log(max(a, FLOOR))``, with ``a`` the attention averaged over layers,
batch and heads (the weight the ratio uses, per query row). The terms:

- ``parallel``: the key belongs to a parallel set (an earlier one, or the query's own step);
- ``log_distance``: ``log(1 + logical distance)`` from the query to the key (0 for a sibling);
- ``prompt``: the key is a prompt token; ``first``: the key is physical position 0;
- ``sibling``: the key is a sibling of the query in its own step (visible mode only; isolated hides them).

Fits are ordinary least squares by :func:`numpy.linalg.lstsq`; the bootstrap's refits solve the same
problem from each run's sums of squares and cross-products (:func:`_refits`: the same solution, all
resamples at once instead of a fit over every pair per resample). The coefficient of ``parallel`` is a
log factor: ``exp(beta)`` is how many times more attention a parallel key gets, the other terms held
fixed. The **raw effect** is that coefficient with ``parallel`` and ``first`` only (the first token
held fixed, as in the sink-excluded ratio the report's headline quotes); ``prompt``, ``log_distance``
and ``sibling`` are then added one at a time in that order, and each one's **share of the raw effect**
is how far it moves the parallel coefficient, over the raw coefficient (order matters; it is fixed).
The response is a log, so these are effects on the geometric mean, where the ratios use the
arithmetic mean: a few heavily attended keys move a ratio more than a coefficient. Intervals resample prompts
(runs) with replacement: each resample refits on the chosen runs, a run drawn twice counted twice, and the interval
is the studentized (bootstrap-t) one, each refit's coefficient over its run-clustered standard error.
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


def _run_pairs(run: Any) -> tuple[dict[str, np.ndarray], Float[np.ndarray, "pair layer head_index"]]:
    """The pairs of every captured step of one run (columns :data:`PAIR_COLUMNS` as arrays) and each pair's weight per (layer, head).

    The run's mask is built once: a step's visibility is its rows (the step's siblings) and columns (every key up
    to its last sibling) of the whole layout's mask.
    """
    layout = run.layout
    steps = np.asarray(layout.steps)
    positions = np.asarray(layout.logical_positions)
    parallel = layout.parallel_tensor().numpy()
    blocked = layout.blocked(run.mode).numpy()
    columns: dict[str, list[np.ndarray]] = {"step": [], "query": [], "key": []}
    heads = []
    for step in run.step_ids:
        a, siblings = step_attention(run.attention[step], layout, step)
        seen = ~blocked[siblings.start : siblings.stop, : siblings.stop]
        seen[np.arange(len(siblings)), np.asarray(siblings)] = False
        q, k = np.nonzero(seen)
        heads.append(np.moveaxis(a.mean(axis=1)[:, :, q, k], -1, 0))  # [pair, layer, head]
        columns["step"].append(np.full(len(k), step))
        columns["query"].append(siblings.start + q)
        columns["key"].append(k)
    if not heads:
        return {}, np.empty((0, 0, 0), dtype=np.float32)
    step, query, key = (np.concatenate(columns[c]).astype(np.int64) for c in ("step", "query", "key"))
    weights = np.concatenate(heads)
    arrays = {
        "step": step,
        "query": query,
        "key": key,
        "attention": weights.mean(axis=(1, 2), dtype=np.float64),
        "parallel": parallel[key].astype(np.float64),
        "first": (key == 0).astype(np.float64),
        "prompt": (steps[key] < 0).astype(np.float64),
        "log_distance": np.log1p(positions[query] - positions[key]),
        "sibling": (steps[key] == step).astype(np.float64),
    }
    return arrays, weights


def _pairs(runs: Iterable[Any]) -> tuple[pd.DataFrame, Float[np.ndarray, "pair layer head_index"] | None]:
    """The pair table of ``runs`` and each pair's weight per (layer, head) (None without a pair)."""
    parts = [(run, *_run_pairs(run)) for run in as_runs(runs)]
    parts = [p for p in parts if p[1]]
    if not parts:
        return pd.DataFrame(columns=PAIR_COLUMNS), None
    sizes = [len(arrays["key"]) for _, arrays, _ in parts]
    table = pd.DataFrame(
        {
            "run": np.repeat(np.array([run.name for run, _, _ in parts], dtype=object), sizes),
            "mode": np.repeat(np.array([run.mode for run, _, _ in parts], dtype=object), sizes),
            **{c: np.concatenate([arrays[c] for _, arrays, _ in parts]) for c in PAIR_COLUMNS[2:]},
        },
        columns=PAIR_COLUMNS,
    )
    return table, np.concatenate([heads for _, _, heads in parts])


def pair_table(runs: Iterable[Any]) -> pd.DataFrame:
    """One row per (run, step, query sibling, visible key other than the query itself); columns :data:`PAIR_COLUMNS`.

    Visibility follows the run's mode and pruning (:meth:`TokenLayout.blocked`).
    """
    return _pairs(runs)[0]


def head_parallel_coefficients(runs: Iterable[Any]) -> Float[np.ndarray, "layer head_index"]:
    """Per captured (layer, head): the ``parallel`` coefficient of the full model fitted to that head's weights alone.

    One :func:`numpy.linalg.lstsq` call with a column of responses per head; NaN when no parallel key was seen.
    """
    pairs, heads = _pairs(runs)
    if heads is None:
        return np.empty((0, 0))
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


def _run_products(x: np.ndarray, y: np.ndarray, run_index: np.ndarray, n_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Each run's ``X_r' X_r`` (``[run, p, p]``) and ``X_r' y_r`` (``[run, p]``): all a refit needs of its rows."""
    p = x.shape[1]
    products = x[:, :, None] * x[:, None, :]
    gram = np.stack([np.bincount(run_index, weights=products[:, i, j], minlength=n_runs) for i in range(p) for j in range(p)], 1)
    moment = np.stack([np.bincount(run_index, weights=x[:, i] * y, minlength=n_runs) for i in range(p)], 1)
    return gram.reshape(n_runs, p, p), moment


def _refits(x: np.ndarray, y: np.ndarray, counts: np.ndarray, run_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients for each resample (``counts[resample, run]``: how often each run was drawn), and
    their run-clustered standard errors.

    The problem ``min sum_r c_r |y_r - X_r b|^2`` depends on each run's rows only through ``X_r' X_r`` and
    ``X_r' y_r``, so these are summed once per run and every refit solves its weighted sum of them, all
    resamples in one batched call. The pseudo-inverse gives :func:`numpy.linalg.lstsq`'s minimum-norm
    solution where a resample leaves a term constant. The standard error is the sandwich over runs (each
    drawn copy of a run one cluster): ``A^-1 (sum_r c_r s_r s_r') A^-1`` with ``A = sum_r c_r X_r' X_r`` and the
    run's score ``s_r = X_r' (y_r - X_r b)``.
    """
    gram, moment = _run_products(x, y, run_index, counts.shape[1])
    inverse = np.linalg.pinv(np.einsum("nr,rij->nij", counts, gram), hermitian=True)
    beta = np.einsum("nij,nj->ni", inverse, counts @ moment)
    scores = moment[None] - np.einsum("rij,nj->nri", gram, beta)
    meat = np.einsum("nr,nri,nrj->nij", counts, scores, scores)
    variance = np.einsum("nij,njk,nkl->nil", inverse, meat, inverse)
    return beta, np.sqrt(np.clip(np.diagonal(variance, axis1=1, axis2=2), 0.0, None))


def _studentized(
    estimate: float, se: float, draws: np.ndarray, draw_se: np.ndarray, ci: float
) -> tuple[float | None, float | None]:
    """The bootstrap-t interval of one coefficient (:func:`~tempo_lens.analysis.stats.bootstrap_ci`'s rule): each
    resample's ``t* = (b* - b) / se*``; a resample with no spread has an infinite ``t*``; None when unbounded."""
    keep = np.isfinite(draws) & np.isfinite(draw_se)
    draws, draw_se = draws[keep], draw_se[keep]
    if len(draws) < 2 or not (np.isfinite(estimate) and np.isfinite(se)) or se <= 0:
        return None, None
    deviation = draws - estimate
    flat = draw_se <= 1e-9 * se
    t = np.where(flat, np.copysign(np.inf, deviation), deviation / np.where(flat, 1.0, draw_se))
    t[flat & (deviation == 0)] = 0.0
    tail = (1 - ci) / 2 * 100
    t_lo, t_hi = np.percentile(np.sort(t), [tail, 100 - tail], method="nearest")
    if not (np.isfinite(t_lo) and np.isfinite(t_hi)):
        return None, None
    return float(estimate - t_hi * se), float(estimate - t_lo * se)


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
    """Fit the full model and the raw effect, with studentized intervals over ``n_boot`` resamples of the runs.

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
    everyone = np.ones((1, len(runs)))
    draws_full, se_full = _refits(x, y, counts, run_index)
    draws_raw, se_raw = _refits(x[:, raw_columns], y, counts, run_index)
    (base_full,), (base_se_full,) = _refits(x, y, everyone, run_index)
    (base_raw,), (base_se_raw,) = _refits(x[:, raw_columns], y, everyone, run_index)

    column = {name: i for i, name in enumerate(["intercept", *used])}

    def bounds(
        i: int, base: np.ndarray, base_se: np.ndarray, draws: np.ndarray, se: np.ndarray
    ) -> tuple[float | None, float | None]:
        return _studentized(float(base[i]), float(base_se[i]), draws[:, i], se[:, i], ci)

    coefficients = [
        Coefficient(
            t, _num(full[t]), *(bounds(column[t], base_full, base_se_full, draws_full, se_full) if t in column else (None, None))
        )
        for t in ("intercept", *TERMS)
    ]
    return RegressionResult(
        n_pairs=len(pairs),
        n_runs=len(runs),
        coefficients=coefficients,
        raw=Coefficient("parallel (raw)", _num(raw), *bounds(1, base_raw, base_se_raw, draws_raw, se_raw)),
        shares=shares,
    )
