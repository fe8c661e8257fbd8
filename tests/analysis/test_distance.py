"""Generated-only and distance-matched ratios on hand-built attention; every expected number is worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempo_lens.analysis import mode_averages, parallel_ratio, ratio_table
from tempo_lens.analysis.distance import (
    NO_MATCH, distance_match, distance_matched_ratio, logical_distance, matched_ratio_table,
)
from tempo_lens.capture import CapturedRun
from tempo_lens.errors import InvalidInputError

from .test_ratios import make_layout, step2, step_from_rows

# Step 4 of make_layout (query 10 at logical 7; keys 0..10). Key 5 is hidden (pruned after step 3).
# Logical positions 0,1,2 | 3 | 4,4 | 5 | 6,6,6 | 7, so distances from the query: key0 7, key1 6, key2 5,
# key3 4, key4 3, key6 2, keys 7..9 1.
STEP4 = [0.30, 0.02, 0.08, 0.12, 0.04, 0.05, 0.06, 0.10, 0.03, 0.03, 0.17]


def step4() -> np.ndarray:
    return step_from_rows([STEP4], 1, 1)


def test_logical_distance_reads_the_layout():
    assert logical_distance(make_layout(), 4).tolist() == [7, 6, 5, 4, 3, 3, 2, 1, 1, 1]


def test_generated_only_leaves_the_prompt_out():
    layout = make_layout()
    # parallel 4,7,8,9: (0.04 + 0.10 + 0.03 + 0.03) / 4 = 0.05
    plain = parallel_ratio(step4(), layout, 4)
    assert plain.ratio == pytest.approx(0.05 / 0.116)  # other 0,1,2,3,6 = 0.58 / 5
    generated = parallel_ratio(step4(), layout, 4, other="generated")
    # other = generated non-parallel keys 3 and 6 only: (0.12 + 0.06) / 2 = 0.09
    assert generated.other_mean == pytest.approx(0.09)
    assert generated.ratio == pytest.approx(5 / 9)
    assert generated.n_other_keys == 2
    with pytest.raises(InvalidInputError, match="other"):
        parallel_ratio(step4(), layout, 4, other="prompt")


def test_generated_only_missing_when_every_other_key_is_prompt():
    # step 2: other generated keys before physical 6 = key 3 only -> measured; step 1 has no parallel set
    layout = make_layout()
    r = parallel_ratio(step2(), layout, 2, other="generated")
    # a = [0.4, 0.1, 0.1, 0.1, 0.05, 0.15, 0.1]: parallel 4,5 = 0.1 ; other = key 3 = 0.1 -> 1.0
    assert r.ratio == pytest.approx(1.0) and r.n_other_keys == 1


def test_distance_match_bin_rule():
    m = distance_match(make_layout(), 4)
    # candidates (not parallel, not key 0, not hidden): 1 (d6), 2 (d5), 3 (d4), 6 (d2)
    # key 4 (d3) matches d in 2..4 -> keys 3, 6 ; keys 7,8,9 (d1) match d in 0..2 -> key 6
    assert m.parallel_keys.tolist() == [4, 7, 8, 9]
    assert [np.flatnonzero(row).tolist() for row in m.matches] == [[3, 6], [6], [6], [6]]


def test_distance_matched_ratio_by_hand():
    r = distance_matched_ratio(step4(), make_layout(), 4)
    # baselines: key 4 -> (0.12 + 0.06) / 2 = 0.09 ; keys 7,8,9 -> 0.06 each
    # matched mean (0.09 + 3 * 0.06) / 4 = 0.0675 ; parallel mean 0.05 -> 0.05 / 0.0675 = 20/27
    assert r["missing_reason"] is None
    assert r["matched_mean"] == pytest.approx(0.0675)
    assert r["ratio"] == pytest.approx(20 / 27)
    assert r["n_matched_parallel"] == 4


def test_wider_window_takes_more_keys():
    r = distance_matched_ratio(step4(), make_layout(), 4, window=2)
    # key 4 (d3) now matches d 1..5: keys 2, 3, 6 -> 0.26 / 3 ; keys 7..9 (d1) match d -1..3: key 6 -> 0.06
    assert r["matched_mean"] == pytest.approx((0.26 / 3 + 0.18) / 4)


def test_no_match_is_missing_not_zero():
    # step 2: parallel keys 4,5 at distance 1; with window 0 nothing non-parallel sits at distance 1
    r = distance_matched_ratio(step2(), make_layout(), 2, window=0)
    assert r["missing_reason"] == NO_MATCH and math.isnan(r["ratio"])
    # window 1: key 3 (distance 2) matches both -> parallel (0.05 + 0.15) / 2 = 0.1 over 0.1 = 1
    assert distance_matched_ratio(step2(), make_layout(), 2)["ratio"] == pytest.approx(1.0)
    assert distance_matched_ratio(np.full((1, 1, 1, 1, 4), 0.25), make_layout(), 0)["missing_reason"] == "no earlier parallel set"


def _run(name: str) -> CapturedRun:
    layout = make_layout()
    attention = {2: step2(), 4: step4()}
    return CapturedRun(name=name, prompt="p", mode="isolated", layout=layout, token_strings=[f"t{i}" for i in range(11)],
                       layers=[0], attention={s: a.mean(axis=0, keepdims=True) for s, a in attention.items()})


def test_tables_average_per_step_then_per_run():
    table = matched_ratio_table([_run("a")])
    assert table.set_index("step").loc[4, "ratio"] == pytest.approx(20 / 27)
    # run mean over its measured steps: (1 + 20/27) / 2
    assert mode_averages(table).loc[0, "ratio"] == pytest.approx((1 + 20 / 27) / 2)
    generated = mode_averages(ratio_table([_run("a")], other="generated"))
    assert generated.loc[0, "ratio"] == pytest.approx((1 + 5 / 9) / 2)
