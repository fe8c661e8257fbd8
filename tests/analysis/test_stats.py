"""Bootstrap intervals, sign-flip permutation p-values and direction words."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tempo_lens.analysis import (
    bootstrap_ci, ci_summary, direction_from_estimate, direction_from_interval, direction_word, paired_permutation_test,
)


def test_bootstrap_covers_known_mean():
    x = np.random.default_rng(1).normal(5.0, 1.0, size=200)
    mean, lo, hi = bootstrap_ci(x)
    assert mean == pytest.approx(x.mean())
    assert lo < 5.0 < hi
    # the 95 % interval of a mean of 200 unit-variance draws is about +-1.96/sqrt(200) = +-0.139
    assert 0.2 < hi - lo < 0.36
    assert bootstrap_ci(x) == bootstrap_ci(x)  # seeded


def test_bootstrap_edge_cases():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    # two or three values: some resamples repeat one value (no spread, t* infinite), so the studentized interval is
    # unbounded and none is given; the percentile interval of the same two values is [1, 3], far too short
    mean, lo, hi = bootstrap_ci([1.0, float("nan"), 3.0])
    assert mean == 2.0 and math.isnan(lo) and math.isnan(hi)
    assert bootstrap_ci([1.0, 3.0], method="percentile") == (2.0, 1.0, 3.0)
    mean, lo, hi = bootstrap_ci([1.0, 3.0, 2.5, 2.2])
    assert lo < 1.0 and hi > 3.0 - 0.5  # four values: bounded, wider than their range on the low side
    mean, lo, hi = bootstrap_ci([4.0, float("nan")])
    assert mean == 4.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_permutation_identical_samples():
    a = [0.4, 0.5, 0.6, 0.7]
    assert paired_permutation_test(a, a) == 1.0
    assert paired_permutation_test(np.arange(30.0), np.arange(30.0)) == 1.0


def test_permutation_exact_small_samples():
    # d = [1, 1, 1]: of 8 sign patterns only +++ and --- reach |mean| >= 1 -> p = 2/8
    assert paired_permutation_test([2, 2, 2], [1, 1, 1]) == pytest.approx(0.25)
    # d = [1, 2, 3, 4]: |sum| >= 10 only for all + or all - -> 2/16
    assert paired_permutation_test([1, 2, 3, 4], [0, 0, 0, 0]) == pytest.approx(0.125)
    # d = [1, -1]: patterns give means 0, 1, -1, 0 ; observed 0 -> every pattern counts -> p = 1
    assert paired_permutation_test([1, 0], [0, 1]) == 1.0


def test_permutation_strong_shift_is_small():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 30)
    p = paired_permutation_test(a + 2.0, a + rng.normal(0, 0.1, 30))
    assert p < 0.001  # Monte Carlo floor is 1 / 10001
    assert paired_permutation_test([1.0, np.nan, 3.0], [0.0, 5.0, 2.0]) == pytest.approx(0.5)  # d=[1,1]: 2/4
    assert math.isnan(paired_permutation_test([np.nan], [1.0]))
    with pytest.raises(ValueError):
        paired_permutation_test([1, 2], [1])


def test_direction_words():
    assert direction_from_estimate(0.48) == "less" and direction_from_estimate(1.2) == "more"
    assert direction_from_estimate(1.0) == "no difference" and direction_from_estimate(float("nan")) == "not measured"
    assert direction_from_interval(0.3, 0.9) == "less" and direction_from_interval(1.1, 1.5) == "more"
    assert direction_from_interval(0.8, 1.2) == "no reliable difference"
    assert direction_from_interval(-0.2, 0.1, null=0.0) == "no reliable difference"
    assert direction_from_interval(-0.2, -0.1, null=0.0) == "less"
    assert direction_from_interval(float("nan"), float("nan")) == "no reliable difference"
    assert direction_word(0.5) == "less" and direction_word(0.5, lo=0.4, hi=1.3) == "no reliable difference"


def test_ci_summary():
    df = pd.DataFrame({"mode": ["isolated"] * 3 + ["visible"] * 3, "ratio": [0.5, 0.5, 0.5, 0.9, 1.1, np.nan]})
    s = ci_summary(df).set_index("mode")
    assert s.loc["isolated", ["mean", "lo", "hi"]].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert s.loc["isolated", "direction"] == "less" and s.loc["isolated", "n"] == 3
    assert s.loc["visible", "n"] == 2 and s.loc["visible", "mean"] == pytest.approx(1.0)
    assert s.loc["visible", "direction"] == "no reliable difference"


def test_holm_adjusts_a_family_step_down():
    from tempo_lens.analysis.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 of m = 4 tests: x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> running max 0.06
    adjusted = holm([0.01, 0.04, 0.03, None, 0.005])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3]) and adjusted[4] == pytest.approx(0.02)
    assert holm([0.6, 0.9]) == [1.0, 1.0] and holm([]) == []
