"""Head specialisation: recent/distant under isolated vs visible masks, entropy/max of the layer mean, grouping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tempo_lens.analysis import group_heads, head_specialisation, heads_by_kv_group
from tempo_lens.layout import TokenLayout


def make_layout() -> TokenLayout:
    layout = TokenLayout.from_prompt([1, 2, 3, 4])  # physical 0..3
    layout.append_step([5], [0.9])  # step 0: 4
    layout.append_step([6, 7], [0.5, 0.4])  # step 1: 5, 6
    return layout


# Step 1: queries 5, 6 over keys 0..6.
# isolated: q5 sees 0..5 (last 3 = 3,4,5 ; other 0,1,2) ; q6 sees 0..4,6 (last 3 = 3,4,6 ; other 0,1,2)
# visible:  q5 the same ; q6 sees 0..6 (last 3 = 4,5,6 ; other 0,1,2,3)
H0 = [[0.4, 0.1, 0.1, 0.1, 0.1, 0.2, 0.0], [0.4, 0.1, 0.1, 0.1, 0.1, 0.0, 0.2]]  # layer mean (split below)
S = 1 / 6
H1 = [[S, S, S, S, S, S, 0.0], [S, S, S, S, S, 0.0, S]]  # uniform over the isolated-visible keys
H2 = [[0.9, 0.02, 0.02, 0.02, 0.02, 0.02, 0.0], [0.9, 0.02, 0.02, 0.02, 0.02, 0.0, 0.02]]  # sink-focused
H3 = [[0, 0, 0, 0, 0.1, 0.9, 0], [0, 0, 0, 0, 0.1, 0, 0.9]]  # focused on the newest key
H4 = [[0.5, 0, 0, 0, 0.25, 0.25, 0], [0.5, 0, 0, 0, 0.25, 0, 0.25]]  # middling entropy


def step_attention() -> np.ndarray:
    """Two layers whose mean is the rows above; head 0 differs between layers so averaging matters."""
    mean = np.array([H0, H1, H2, H3, H4, H2])  # [head=6, q=2, k=7]
    layer0 = mean.copy()
    layer0[0] = [[0.8, 0, 0, 0, 0.2, 0, 0], [0.8, 0, 0, 0, 0.2, 0, 0]]
    layer1 = 2 * mean - layer0  # head 0: [0,.2,.2,.2,0,.4,0] / [0,.2,.2,.2,0,0,.4] (non-negative)
    assert (layer1 >= 0).all()
    return np.stack([layer0, layer1])[:, None]  # [layer=2, batch=1, head=6, q=2, k=7]


def test_isolated_by_hand():
    df = head_specialisation(step_attention(), make_layout(), 1, "isolated", n_kv_heads=3).set_index("head")
    # head 0: q5 recent (.1+.1+.2)/3 = .1333, distant (.4+.1+.1)/3 = .2 ; q6 the same
    assert df.loc[0, "recent"] == pytest.approx(0.4 / 3) and df.loc[0, "distant"] == pytest.approx(0.2)
    # entropy of the LAYER MEAN row: .4 ln(1/.4) + 4 * .1 ln 10 + .2 ln 5 = .8 ln5 + .2 ln5 = ln 5
    assert df.loc[0, "entropy"] == pytest.approx(math.log(5), abs=1e-8)
    assert df.loc[0, "max"] == pytest.approx(0.4)  # not the per-layer max (.8, .4 -> .6)
    # head 1: uniform over 6 visible keys -> recent = distant = 1/6, entropy ln 6, max 1/6
    assert (df.loc[1, "recent"], df.loc[1, "distant"]) == pytest.approx((S, S))
    assert df.loc[1, "entropy"] == pytest.approx(math.log(6), abs=1e-8)
    # head 2: recent .02, distant (.9+.02+.02)/3 = .31333, entropy .9 ln(1/.9) + 5 * .02 ln 50 = .486027
    assert df.loc[2, "recent"] == pytest.approx(0.02) and df.loc[2, "distant"] == pytest.approx(0.94 / 3)
    assert df.loc[2, "entropy"] == pytest.approx(0.9 * math.log(1 / 0.9) + 0.1 * math.log(50), abs=1e-8)
    # head 3: recent (0+.1+.9)/3 = 1/3, distant 0, entropy .1 ln10 + .9 ln(1/.9) = .325083
    assert df.loc[3, "recent"] == pytest.approx(1 / 3) and df.loc[3, "distant"] == pytest.approx(0.0)
    # head 4: recent (0+.25+.25)/3 = 1/6, distant .5/3 = 1/6, entropy 1.5 ln 2 = 1.0397
    assert df.loc[4, "entropy"] == pytest.approx(1.5 * math.log(2), abs=1e-8)
    # kv_head = head // (6 // 3)
    assert df["kv_head"].tolist() == [0, 0, 1, 1, 2, 2]


def test_grouping_rule_by_hand():
    df = head_specialisation(step_attention(), make_layout(), 1, "isolated").set_index("head")
    # entropies: h0 ln5=1.609, h1 ln6=1.792, h2=h5 .486, h3 .325, h4 1.040
    # lo .325, hi 1.792, span 1.467 -> focused below .325 + .489 = .814 ; diffuse from .325 + .978 = 1.303
    assert df["group"].to_dict() == {
        0: "Diffuse", 1: "Diffuse",  # >= 1.303
        2: "Long-range", 5: "Long-range",  # focused and distant .313 > recent .02
        3: "Balanced",  # focused but recent 1/3 > distant 0 (a local head)
        4: "Balanced",  # middle third
    }


def test_visible_mask_moves_the_recent_window():
    df = head_specialisation(step_attention(), make_layout(), 1, "visible").set_index("head")
    # head 0: q6 now sees 0..6: recent keys 4,5,6 = (.1+0+.2)/3 = .1, distant 0..3 = .7/4 = .175
    # averaged with q5 (.1333, .2): recent (.4/3 + .1)/2 = .116667, distant (.2 + .175)/2 = .1875
    assert df.loc[0, "recent"] == pytest.approx((0.4 / 3 + 0.1) / 2)
    assert df.loc[0, "distant"] == pytest.approx(0.1875)
    # head 1: q6 recent (S + 0 + S)/3 = 1/9, distant 4S/4 = 1/6 -> recent (1/6 + 1/9)/2 = 5/36
    assert df.loc[1, "recent"] == pytest.approx(5 / 36) and df.loc[1, "distant"] == pytest.approx(S)


def test_fewer_than_three_visible_keys():
    layout = TokenLayout.from_prompt([1])  # 0
    layout.append_step([2], [0.9])  # step 0: 1
    layout.append_step([3], [0.9])  # step 1: 2
    a = np.array([0.3, 0.7]).reshape(1, 1, 1, 1, 2)
    df = head_specialisation(a, layout, 0, "isolated")
    # 2 visible keys: recent = (.3 + .7)/2 = .5, distant = 0
    assert (df.loc[0, "recent"], df.loc[0, "distant"]) == pytest.approx((0.5, 0.0))
    assert df.loc[0, "max"] == pytest.approx(0.7)
    # exactly 3 keys: recent = their mean 1/3, no other keys -> distant 0
    b = np.array([0.2, 0.3, 0.5]).reshape(1, 1, 1, 1, 3)
    df3 = head_specialisation(b, layout, 1, "visible")
    assert (df3.loc[0, "recent"], df3.loc[0, "distant"]) == pytest.approx((1 / 3, 0.0))


def test_single_head_is_balanced():
    a = step_attention()[:, :, [2]]
    df = head_specialisation(a, make_layout(), 1, "isolated")
    assert len(df) == 1 and df.loc[0, "group"] == "Balanced" and df.loc[0, "kv_head"] == 0


def test_pruned_key_is_not_visible():
    layout = make_layout()
    layout.prune([3], at_step=0, score=0.1)  # prompt key 3 hidden from steps 1..
    df = head_specialisation(step_attention(), layout, 1, "isolated").set_index("head")
    # head 1, q5 now sees 0,1,2,4,5: last 3 = 2,4,5 -> S ; other 0,1 -> S ; same shape for q6
    # head 3, q5: last 3 = 2,4,5 -> (0+.1+.9)/3 = 1/3 ; other 0,1 -> 0
    # head 0, q5: last 3 keys 2,4,5 = (.1+.1+.2)/3 ; other 0,1 = (.4+.1)/2 = .25 ; q6 same
    assert df.loc[0, "recent"] == pytest.approx(0.4 / 3) and df.loc[0, "distant"] == pytest.approx(0.25)


def test_group_rule_directly():
    # entropies 0, 0.5, 1, 1.5, 3 -> span 3, cuts at 1 and 2
    groups = group_heads([0.0, 0.5, 1.0, 1.5, 3.0], recent=[0.1, 0.3, 0.1, 0.1, 0.1], distant=[0.2, 0.2, 0.2, 0.2, 0.2])
    assert groups == ["Long-range", "Balanced", "Balanced", "Balanced", "Diffuse"]
    assert group_heads([1.0, 1.0], [0, 0], [1, 1]) == ["Balanced", "Balanced"]


def test_kv_group_summary():
    df = head_specialisation(step_attention(), make_layout(), 1, "isolated", n_kv_heads=3)
    kv = heads_by_kv_group(df).set_index("kv_head")
    assert kv.loc[1, "heads"] == "2,3" and kv.loc[1, "n_heads"] == 2
    assert kv.loc[0, "groups"] == "Diffuse x2"
    assert kv.loc[1, "groups"] == "Long-range x1, Balanced x1"
    assert kv.loc[2, "entropy"] == pytest.approx((df.loc[4, "entropy"] + df.loc[5, "entropy"]) / 2)
    with pytest.raises(ValueError):
        head_specialisation(step_attention(), make_layout(), 1, "isolated", n_kv_heads=4)


def test_per_layer_head_keeps_layers_apart():
    from tempo_lens.analysis import layer_head_specialisation

    a = step_attention()
    df = layer_head_specialisation(a, make_layout(), 1, "isolated", layers=[7, 9]).set_index(["layer", "head"])
    assert len(df) == 12
    # layer 7 head 0 = [.8, 0, 0, 0, .2, 0, 0] for both queries: recent (0 + .2 + 0)/3, distant .8/3, entropy of (.8, .2), max .8
    assert df.loc[(7, 0), "recent"] == pytest.approx(0.2 / 3) and df.loc[(7, 0), "distant"] == pytest.approx(0.8 / 3)
    assert df.loc[(7, 0), "entropy"] == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), abs=1e-8)
    assert df.loc[(7, 0), "max"] == pytest.approx(0.8)
    # layer 9 head 0 = [0, .2, .2, .2, 0, .4, 0]: recent (.2 + 0 + .4)/3 = .2, distant (0 + .2 + .2)/3
    assert df.loc[(9, 0), "recent"] == pytest.approx(0.2) and df.loc[(9, 0), "distant"] == pytest.approx(0.4 / 3)
    # recent and distant are linear in attention: their mean over layers is the averaged view's value
    averaged = head_specialisation(a, make_layout(), 1, "isolated").set_index("head")
    for column in ("recent", "distant"):
        assert df[column].groupby(level="head").mean().tolist() == pytest.approx(averaged[column].tolist())
    # entropy is not: the averaged view's head 0 (ln 5) is not the mean of the per-layer entropies
    assert df.loc[[(7, 0), (9, 0)], "entropy"].mean() != pytest.approx(averaged.loc[0, "entropy"])
    assert set(df["group"]) <= {"Long-range", "Balanced", "Diffuse"}
