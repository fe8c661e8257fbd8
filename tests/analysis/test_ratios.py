"""Parallel : other ratio on hand-built attention; every expected number is worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tempo_lens.analysis.ratios import MIN_DENOMINATOR, NO_OTHER_ATTENTION
from tempo_lens.analysis import (
    RatioResult, key_buckets, mode_averages, parallel_ratio, ratio_by_head, ratio_by_layer, ratio_table,
)
from tempo_lens.capture import CapturedRun
from tempo_lens.errors import InvalidInputError
from tempo_lens.layout import TokenLayout


def make_layout() -> TokenLayout:
    """Physical: prompt 0,1,2 | s0: 3 | s1: 4,5 | s2: 6 | s3: 7,8,9 | s4: 10.  Key 5 pruned after step 3."""
    layout = TokenLayout.from_prompt([10, 11, 12])
    layout.append_step([20], [0.9])
    layout.append_step([21, 22], [0.6, 0.3])
    layout.append_step([23], [0.8])
    layout.append_step([24, 25, 26], [0.4, 0.3, 0.2])
    layout.append_step([27], [0.95])
    layout.prune([5], at_step=3, score=0.2)  # hidden from steps 4.. ; still visible to step 3
    return layout


def step_from_rows(rows: list[list[float]], n_layers: int, n_heads: int) -> np.ndarray:
    """Rows listed layer-major (L0H0, L0H1, L1H0, ...), one query each -> [layer, 1, head, 1, key]."""
    a = np.asarray(rows, dtype=np.float64).reshape(n_layers, 1, n_heads, 1, -1)
    assert np.allclose(a.sum(-1), 1.0)
    return a


# Step 2 (query = physical 6, keys 0..6). Four (layer, head) rows whose mean is
# a = [0.4, 0.1, 0.1, 0.1, 0.05, 0.15, 0.1]:
#   key0 (1+.2+.2+.2)/4=.4  key1..3 (0+.2+.1+.1)/4=.1  key4 (0+0+.2+0)/4=.05  key5 (0+.2+.2+.2)/4=.15  key6 .1
STEP2_ROWS = [
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # L0 H0
    [0.2, 0.2, 0.2, 0.2, 0.0, 0.2, 0.0],  # L0 H1
    [0.2, 0.1, 0.1, 0.1, 0.2, 0.2, 0.1],  # L1 H0
    [0.2, 0.1, 0.1, 0.1, 0.0, 0.2, 0.3],  # L1 H1
]


def step2() -> np.ndarray:
    return step_from_rows(STEP2_ROWS, n_layers=2, n_heads=2)


def test_buckets_read_the_layout():
    b = key_buckets(make_layout(), 4)
    # keys 0..9; parallel = steps 1 and 3 (4,5,7,8,9) minus pruned 5; other = prompt 0,1,2 + singles 3,6
    assert np.flatnonzero(b.parallel).tolist() == [4, 7, 8, 9]
    assert np.flatnonzero(b.other).tolist() == [0, 1, 2, 3, 6]
    assert b.n_sets == 2 and b.set_of_key[[4, 7, 8, 9]].tolist() == [0, 1, 1, 1]


def test_ratio_step2_by_hand():
    r = parallel_ratio(step2(), make_layout(), 2)
    # parallel keys 4,5: (0.05 + 0.15) / 2 = 0.1 ; other keys 0..3: (0.4 + 0.1 * 3) / 4 = 0.175
    assert r.missing_reason is None
    assert r.parallel_mean == pytest.approx(0.1)
    assert r.other_mean == pytest.approx(0.175) and r.other_token_mean == pytest.approx(0.175)
    assert r.ratio == pytest.approx(0.1 / 0.175)  # 4/7 = 0.5714
    # one set {4, 5}: mass 0.05 + 0.15 = 0.2 ; set ratio 0.2 / 0.175 = 8/7
    assert r.parallel_set_mass == pytest.approx(0.2)
    assert r.set_ratio == pytest.approx(8 / 7)
    assert (r.n_parallel_keys, r.n_other_keys, r.n_parallel_sets) == (2, 4, 1)


def test_exclude_first_drops_position_zero():
    r = parallel_ratio(step2(), make_layout(), 2, exclude_first=True)
    # other keys 1..3: 0.1 each -> mean 0.1 ; parallel mean 0.1 -> ratio 1.0
    assert r.other_mean == pytest.approx(0.1)
    assert r.ratio == pytest.approx(1.0)
    assert r.n_other_keys == 3


def test_torch_input_gives_same_answer():
    r = parallel_ratio(torch.tensor(step2(), dtype=torch.float32), make_layout(), 2)
    assert r.ratio == pytest.approx(4 / 7, rel=1e-6)


def test_pruned_key_is_in_neither_bucket():
    # Step 4 (query 10, keys 0..10), one layer, one head:
    a = [0.25, 0.05, 0.05, 0.1, 0.04, 0.05, 0.1, 0.1, 0.03, 0.03, 0.2]
    r = parallel_ratio(step_from_rows([a], 1, 1), make_layout(), 4)
    # key 5 (pruned after step 3) is hidden: parallel 4,7,8,9 = (0.04+0.1+0.03+0.03)/4 = 0.05
    # other 0,1,2,3,6 = (0.25+0.05+0.05+0.1+0.1)/5 = 0.11 ; ratio 0.05/0.11 = 5/11
    assert r.parallel_mean == pytest.approx(0.05)
    assert r.other_mean == pytest.approx(0.11)
    assert r.ratio == pytest.approx(5 / 11)
    # sets: step 1 -> {4} mass 0.04 ; step 3 -> {7,8,9} mass 0.16 ; mean 0.1
    assert r.parallel_set_mass == pytest.approx(0.1)
    assert (r.n_parallel_keys, r.n_other_keys, r.n_parallel_sets) == (4, 5, 2)


def test_key_pruned_at_this_step_still_counts():
    # Step 3 (queries 7,8,9; keys 0..9): key 5 pruned at step 3 is hidden only from steps > 3.
    rows = np.array([
        [0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0],
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.0],
        [0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0, 0.2],
    ]).reshape(1, 1, 1, 3, 10)
    r = parallel_ratio(rows, make_layout(), 3)
    # mean over queries: key0 = 0.6/3 = 0.2, keys 1..6 = 0.1
    # parallel 4,5 -> 0.1 ; other 0,1,2,3,6 -> 0.6/5 = 0.12 ; ratio 5/6
    assert r.n_parallel_keys == 2
    assert r.ratio == pytest.approx(5 / 6)
    # sink variant: other 1,2,3,6 -> 0.1 ; ratio 1
    assert parallel_ratio(rows, make_layout(), 3, exclude_first=True).ratio == pytest.approx(1.0)


def test_no_earlier_parallel_set_is_missing_not_zero():
    layout = make_layout()
    for step, n_keys in ((0, 4), (1, 6)):
        n_q = len(layout.step_range(step))
        a = np.full((1, 1, 1, n_q, n_keys), 1.0 / n_keys)
        r = parallel_ratio(a, layout, step)
        assert r.missing_reason == "no earlier parallel set"
        assert math.isnan(r.ratio) and math.isnan(r.parallel_mean) and math.isnan(r.other_mean)
        assert math.isnan(r.parallel_set_mass) and math.isnan(r.set_ratio)
        assert r.n_parallel_keys == 0


def test_no_other_keys_when_only_the_sink_was_other():
    layout = TokenLayout.from_prompt([1])  # physical 0
    layout.append_step([5, 6], [0.5, 0.4])  # 1, 2
    layout.append_step([7], [0.9])  # 3
    a = np.full((1, 1, 1, 1, 4), 0.25)
    assert parallel_ratio(a, layout, 1).ratio == pytest.approx(1.0)  # 0.25 / 0.25
    r = parallel_ratio(a, layout, 1, exclude_first=True)
    assert r.missing_reason == "no other keys" and math.isnan(r.ratio)


def test_shape_mismatch_is_refused():
    with pytest.raises(InvalidInputError, match="step 2"):
        parallel_ratio(np.zeros((1, 1, 1, 1, 6)), make_layout(), 2)


def test_ratio_by_layer_and_head_by_hand():
    layout = make_layout()
    by_layer = ratio_by_layer(step2(), layout, 2, layers=[5, 9])
    # layer 5 = (L0H0 + L0H1)/2 = [.6,.1,.1,.1,0,.1,0]: parallel (0+.1)/2=.05, other .9/4=.225 -> 2/9
    # layer 9 = (L1H0 + L1H1)/2 = [.2,.1,.1,.1,.1,.2,.2]: parallel .15, other .5/4=.125 -> 1.2
    assert by_layer["layer"].tolist() == [5, 9]
    assert by_layer["ratio"].tolist() == pytest.approx([2 / 9, 1.2])
    assert by_layer["other_mean"].tolist() == pytest.approx([0.225, 0.125])
    by_head = ratio_by_head(step2(), layout, 2)
    # head 0 = (L0H0 + L1H0)/2 = [.6,.05,.05,.05,.1,.1,.05]: parallel .1, other .75/4=.1875 -> 8/15
    # head 1 = (L0H1 + L1H1)/2 = [.2,.15,.15,.15,0,.2,.15]: parallel .1, other .65/4=.1625 -> 8/13
    assert by_head["head"].tolist() == [0, 1]
    assert by_head["ratio"].tolist() == pytest.approx([8 / 15, 8 / 13])
    # the means over layers/heads agree with the step ratio's buckets (layer means average to a)
    assert by_layer["parallel_mean"].mean() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        ratio_by_layer(step2(), layout, 2, layers=[1])


def test_ratio_by_layer_missing_rows():
    layout = make_layout()
    frame = ratio_by_layer(np.full((3, 1, 1, 1, 4), 0.25), layout, 0)
    assert frame["missing_reason"].eq("no earlier parallel set").all() and frame["ratio"].isna().all()


def _run(mode: str, name: str) -> CapturedRun:
    layout = make_layout()
    attention = {}
    for step in range(layout.n_steps):
        sib = layout.step_range(step)
        attention[step] = np.full((2, 1, 2, len(sib), sib.stop), 1.0 / sib.stop)
    attention[2] = step2()
    return CapturedRun(name=name, prompt="p", mode=mode, layout=layout, token_strings=[f"t{i}" for i in range(11)],
                       layers=[0, 1], attention=attention)


def test_runs_of_one_name_are_refused_not_pooled():
    """mode_averages groups by run name: two prompts' runs named alike would average as one run."""
    with pytest.raises(InvalidInputError, match="two runs are named 'a'"):
        ratio_table([_run("isolated", "a"), _run("isolated", "a")])


def test_ratio_table_rows_and_missing():
    df = ratio_table([_run("isolated", "a"), _run("visible", "b")])
    assert list(df.columns[:12]) == ["run", "prompt", "mode", "step", "ratio", "parallel_mean", "other_mean",
                                     "parallel_set_mass", "n_parallel_keys", "n_other_keys", "n_parallel_sets",
                                     "missing_reason"]
    assert len(df) == 10 and df["step"].tolist()[:5] == [0, 1, 2, 3, 4]
    a = df[df["run"] == "a"].set_index("step")
    assert a.loc[0, "missing_reason"] == "no earlier parallel set"
    assert a.loc[1, "missing_reason"] == "no earlier parallel set"
    assert a.loc[2, "ratio"] == pytest.approx(4 / 7)
    # uniform attention at steps 3 and 4: every key weighs the same, so the ratio is exactly 1
    assert a.loc[3, "ratio"] == pytest.approx(1.0) and a.loc[4, "ratio"] == pytest.approx(1.0)
    avg = mode_averages(df).set_index("run")
    # (4/7 + 1 + 1) / 3 over the three measured steps
    assert avg.loc["a", "ratio"] == pytest.approx((4 / 7 + 2) / 3)
    assert avg.loc["a", "n_steps"] == 3 and avg.loc["a", "steps"] == "2,3,4"


def test_mode_averages_reference_arithmetic():
    rows = [("iso", "isolated", s, r, None) for s, r in zip((3, 4, 5, 6), (0.394, 0.611, 0.560, 0.363))]
    rows.append(("iso", "isolated", 1, float("nan"), "no earlier parallel set"))
    df = pd.DataFrame(rows, columns=["run", "mode", "step", "ratio", "missing_reason"])
    avg = mode_averages(df)
    # (0.394 + 0.611 + 0.560 + 0.363) / 4 = 1.928 / 4 = 0.482
    assert avg.loc[0, "ratio"] == pytest.approx(0.482)
    assert avg.loc[0, "n_steps"] == 4


def test_ratio_result_is_a_dataclass_record():
    r = parallel_ratio(step2(), make_layout(), 2)
    assert isinstance(r, RatioResult) and r.step == 2


def test_zero_attention_to_other_keys_is_missing_not_infinite():
    # step 2 row with all weight on parallel key 4 and the query itself: other mean 0 -> no ratio
    a = step_from_rows([[0, 0, 0, 0, 0.5, 0, 0.5]], 1, 1)
    r = parallel_ratio(a, make_layout(), 2)
    assert r.missing_reason == NO_OTHER_ATTENTION and math.isnan(r.ratio)
    assert ratio_by_head(a, make_layout(), 2).loc[0, "missing_reason"] == NO_OTHER_ATTENTION


def test_a_ratio_over_a_near_zero_denominator_is_not_measurable():
    """Other keys 0..3 at 1e-9 each: 0.5 / 1e-9 = 5e8 would be rounding noise; below the floor it is n/a."""
    tiny = 1e-9
    a = step_from_rows([[tiny] * 4 + [0.5 - 2 * tiny, 0.0, 0.5 - 2 * tiny]], 1, 1)
    r = parallel_ratio(a, make_layout(), 2)
    assert r.missing_reason == NO_OTHER_ATTENTION and math.isnan(r.ratio) and math.isnan(r.set_ratio)
    assert ratio_by_layer(a, make_layout(), 2).loc[0, "missing_reason"] == NO_OTHER_ATTENTION
    # just above the floor it is measured: parallel keys 4, 5 -> (0.5 - 2e-6 + 0) / 2 over other mean 2e-6
    small = 2 * MIN_DENOMINATOR
    b = step_from_rows([[small] * 4 + [0.5 - 2 * small, 0.0, 0.5 - 2 * small]], 1, 1)
    measured = parallel_ratio(b, make_layout(), 2)
    assert measured.missing_reason is None
    assert measured.ratio == pytest.approx((0.5 - 2 * small) / 2 / small)
