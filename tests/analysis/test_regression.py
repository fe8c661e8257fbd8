"""The (query, key) regression: the pair table read from a hand-built layout, and fits on attention built from known terms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tempo_lens.analysis.head_map import head_map, sink_share
from tempo_lens.analysis.regression import (
    FLOOR, PAIR_COLUMNS, TERMS, attention_regression, fit, head_parallel_coefficients, pair_table, sequential_shares,
)
from tempo_lens.capture import CapturedRun
from tempo_lens.layout import TokenLayout

from .test_ratios import make_layout, step2


def _run(mode: str, attention: dict, layout: TokenLayout | None = None, name: str = "r") -> CapturedRun:
    layout = layout or make_layout()
    n_layers = next(iter(attention.values())).shape[0]
    return CapturedRun(name=name, prompt="p", mode=mode, layout=layout, token_strings=[f"t{i}" for i in range(len(layout))],
                       layers=list(range(n_layers)), attention=attention)


def _uniform(layout: TokenLayout, step: int, n_layers: int = 1, n_heads: int = 1) -> np.ndarray:
    sib = layout.step_range(step)
    return np.full((n_layers, 1, n_heads, len(sib), sib.stop), 1.0 / sib.stop)


def test_pair_table_by_hand():
    layout = make_layout()
    pairs = pair_table(_run("isolated", {2: step2()}))
    assert list(pairs.columns) == PAIR_COLUMNS
    # step 2, query 6 (logical 5) sees keys 0..5 (itself left out): 6 rows
    assert pairs["key"].tolist() == [0, 1, 2, 3, 4, 5]
    # a = [0.4, 0.1, 0.1, 0.1, 0.05, 0.15, 0.1] (mean over the 2 layers x 2 heads)
    assert pairs["attention"].tolist() == pytest.approx([0.4, 0.1, 0.1, 0.1, 0.05, 0.15])
    assert pairs["parallel"].tolist() == [0, 0, 0, 0, 1, 1]
    assert pairs["first"].tolist() == [1, 0, 0, 0, 0, 0]
    assert pairs["prompt"].tolist() == [1, 1, 1, 0, 0, 0]
    # logical distances 5,4,3,2,1,1 -> log(1 + d)
    assert pairs["log_distance"].tolist() == pytest.approx(np.log1p([5, 4, 3, 2, 1, 1]).tolist())
    assert pairs["sibling"].sum() == 0
    assert layout.n_steps == 5


def test_siblings_are_pairs_in_visible_mode_only():
    layout = make_layout()
    attention = {3: _uniform(layout, 3)}
    iso = pair_table(_run("isolated", attention))
    vis = pair_table(_run("visible", attention))
    # step 3 = queries 7, 8, 9. Isolated: each sees keys 0..6 (key 5, pruned at step 3, is still seen by step 3)
    assert len(iso) == 3 * 7 and iso["sibling"].sum() == 0
    # visible: query 8 also sees 7, query 9 sees 7 and 8 -> 3 sibling pairs at distance 0
    assert len(vis) == 3 * 7 + 3
    siblings = vis[vis["sibling"] == 1]
    assert list(zip(siblings["query"], siblings["key"])) == [(8, 7), (9, 7), (9, 8)]
    assert siblings["log_distance"].tolist() == [0, 0, 0] and siblings["parallel"].tolist() == [1, 1, 1]


def _synthetic(beta: dict[str, float], n_runs: int = 6, seed: int = 1) -> pd.DataFrame:
    """Pairs whose log attention is exactly intercept + sum(beta * term); distance is larger for non-parallel keys."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(n_runs):
        for key in range(40):
            parallel = float(key % 3 == 0)
            first = float(key == 0)
            prompt = float(key < 10)
            sibling = float(key % 9 == 3)
            log_distance = np.log1p((1 if parallel else 4) + rng.integers(0, 4) + (10 if prompt else 0))
            terms = dict(parallel=parallel, first=first, prompt=prompt, log_distance=log_distance, sibling=sibling)
            log_a = beta["intercept"] + sum(beta[t] * terms[t] for t in TERMS)
            rows.append(dict(run=f"r{run}", mode="visible", step=0, query=99, key=key, attention=math.exp(log_a), **terms))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def test_fit_recovers_known_coefficients():
    beta = dict(intercept=-2.0, parallel=0.0, first=3.0, prompt=0.5, log_distance=-1.0, sibling=-0.7)
    pairs = _synthetic(beta)
    got = fit(pairs, TERMS)
    assert {k: got[k] for k in beta} == pytest.approx(beta, abs=1e-9)


def test_distance_explains_a_raw_effect_that_is_only_recency():
    # attention depends on distance only; parallel keys are nearer, so the raw effect is positive
    beta = dict(intercept=-2.0, parallel=0.0, first=0.0, prompt=0.0, log_distance=-1.0, sibling=0.0)
    pairs = _synthetic(beta)
    raw, shares = sequential_shares(pairs)
    assert raw > 0.1
    # everything the raw effect had is explained once prompt and distance enter: shares add up to 1
    assert shares["prompt"] + shares["log_distance"] + shares["sibling"] == pytest.approx(1.0)
    result = attention_regression(pairs, n_boot=200)
    parallel = result.coefficient("parallel")
    assert parallel.estimate == pytest.approx(0.0, abs=1e-9)
    assert parallel.lo == pytest.approx(0.0, abs=1e-9) and parallel.hi == pytest.approx(0.0, abs=1e-9)
    assert result.raw.lo > 0 and result.n_runs == 6 and result.n_pairs == len(pairs)


def test_a_true_parallel_effect_survives():
    beta = dict(intercept=-2.0, parallel=0.4, first=3.0, prompt=0.0, log_distance=-1.0, sibling=0.0)
    noise = np.random.default_rng(3).normal(0, 0.05, 240)
    pairs = _synthetic(beta)
    pairs["attention"] *= np.exp(noise)
    result = attention_regression(pairs, n_boot=300)
    parallel = result.coefficient("parallel")
    assert parallel.lo < 0.4 < parallel.hi and parallel.lo > 0.3


def test_constant_term_is_not_fitted_and_floor_applies():
    beta = dict(intercept=-2.0, parallel=0.2, first=1.0, prompt=0.0, log_distance=-1.0, sibling=0.0)
    pairs = _synthetic(beta).assign(sibling=0.0)
    assert math.isnan(fit(pairs, TERMS)["sibling"])
    assert attention_regression(pairs, n_boot=50).coefficient("sibling").estimate is None
    pairs.loc[5, "attention"] = 0.0  # read as FLOOR, not -inf
    assert np.isfinite(fit(pairs, TERMS)["parallel"]) and FLOOR > 0
    assert attention_regression(pairs.assign(parallel=0.0)) is None


def test_head_map_by_hand():
    layout = make_layout()
    a2 = step2()  # 2 layers x 2 heads, one query
    # two runs (prompts) with the same step
    runs = [_run("isolated", {2: a2}, layout, "a"), _run("isolated", {2: a2.copy()}, layout, "b")]
    table = head_map(runs)
    assert table[["layer", "head"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # sink share = weight on key 0 of each (layer, head): 1.0, 0.2, 0.2, 0.2
    assert table["sink_share"].tolist() == pytest.approx([1.0, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(sink_share(runs[0]), [[1.0, 0.2], [0.2, 0.2]])
    # each head's coefficient equals the full model fitted to that head's weights alone
    pairs = pair_table(runs)
    coef = head_parallel_coefficients(runs)
    for layer in range(2):
        for head in range(2):
            single = np.concatenate([a2[layer, 0, head, 0, :6]] * 2)
            expected = fit(pairs.assign(attention=single), TERMS)["parallel"]
            assert coef[layer, head] == pytest.approx(expected)
    assert table["parallel_coef"].tolist() == pytest.approx(coef.ravel().tolist())


def test_bootstrap_refits_equal_a_direct_weighted_fit():
    from tempo_lens.analysis.regression import _design, _refits

    beta = dict(intercept=-2.0, parallel=0.3, first=1.0, prompt=0.2, log_distance=-1.0, sibling=-0.5)
    pairs = _synthetic(beta)
    pairs["attention"] *= np.exp(np.random.default_rng(5).normal(0, 0.3, len(pairs)))
    x, y = _design(pairs, TERMS)
    runs, run_index = np.unique(pairs["run"], return_inverse=True)
    counts = np.array([[2, 0, 1, 1, 0, 2], [1, 1, 1, 1, 1, 1]], dtype=float)
    got, se = _refits(x, y, counts, run_index)
    for c, b, s in zip(counts, got, se):
        w = np.sqrt(c[run_index])
        direct = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
        assert b == pytest.approx(direct, abs=1e-9)
        # the run-clustered sandwich, written out run by run (a run drawn twice is two clusters)
        bread = np.linalg.inv((x * (w**2)[:, None]).T @ x)
        meat = np.zeros_like(bread)
        for r, k in enumerate(c):
            rows = run_index == r
            score = x[rows].T @ (y[rows] - x[rows] @ direct)
            meat += k * np.outer(score, score)
        assert s == pytest.approx(np.sqrt(np.diag(bread @ meat @ bread)), rel=1e-6)
    # all counts 1 is the plain fit
    assert got[1] == pytest.approx(list(fit(pairs, TERMS).values()), abs=1e-9)
