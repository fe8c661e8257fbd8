"""Layer entropy, groups and depth thirds against closed-form entropies (uniform over m keys -> ln m)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempo_lens.analysis import depth_pattern, entropy_by_step, entropy_groups, layer_entropy, layer_entropy_table
from tempo_lens.analysis.entropy import depth_third
from tempo_lens.capture import CapturedRun
from tempo_lens.layout import TokenLayout


def uniform(m: int, k: int) -> list[float]:
    return [1.0 / m] * m + [0.0] * (k - m)


def test_layer_entropy_by_hand():
    a = np.array([
        [uniform(4, 4), [1.0, 0, 0, 0]],  # layer 0: heads ln4 and 0 -> mean ln2
        [uniform(2, 4), uniform(4, 4)],  # layer 1: heads ln2 and ln4 = 2 ln2 -> mean 1.5 ln2
    ]).reshape(2, 1, 2, 1, 4)
    h = layer_entropy(a)
    assert h == pytest.approx([math.log(2), 1.5 * math.log(2)], abs=1e-8)


def test_queries_and_batch_are_averaged():
    # one layer, 2 batch rows x 1 head x 2 queries: entropies ln1=0, ln2, ln4, ln8 -> mean 6 ln2 / 4 = 1.5 ln2
    a = np.array([[uniform(1, 8), uniform(2, 8)], [uniform(4, 8), uniform(8, 8)]]).reshape(1, 2, 1, 2, 8)
    assert layer_entropy(a)[0] == pytest.approx(1.5 * math.log(2), abs=1e-8)


def seven_layers() -> np.ndarray:
    # layer l uniform over m[l] of 8 keys: entropies ln 4, ln 1, ln 8, ln 2, ln 6, ln 3, ln 5
    m = [4, 1, 8, 2, 6, 3, 5]
    return np.array([uniform(x, 8) for x in m]).reshape(7, 1, 1, 1, 8)


def test_table_groups_and_depth():
    t = layer_entropy_table(seven_layers(), layers=range(7), n_layers=7)
    # ascending: l1 (ln1), l3 (ln2), l5 (ln3), l0 (ln4), l6 (ln5), l4 (ln6), l2 (ln8)
    assert t.set_index("layer")["group"].to_dict() == {
        1: "most focused", 3: "most focused", 5: "most focused", 0: "mid",
        6: "most diffuse", 4: "most diffuse", 2: "most diffuse"}
    # thirds: l*3//7 -> 0,0,0,1,1,2,2
    assert t["depth"].tolist() == ["early"] * 3 + ["middle"] * 2 + ["late"] * 2
    p = depth_pattern(t).set_index("depth")
    assert p.loc["early", "min"] == pytest.approx(0.0, abs=1e-8)
    assert p.loc["early", "max"] == pytest.approx(math.log(8))
    assert p.loc["early", "mean"] == pytest.approx(5 * math.log(2) / 3)  # (ln4 + ln1 + ln8) / 3
    assert p.loc["middle", "mean"] == pytest.approx(math.log(12) / 2)  # (ln2 + ln6) / 2
    assert (p.loc["late", "first_layer"], p.loc["late", "last_layer"], p.loc["late", "n_layers"]) == (5, 6, 2)


def test_depth_thirds_of_28_layers():
    # l*3//28: 9 -> 27//28 = 0 ; 10 -> 30//28 = 1 ; 18 -> 54//28 = 1 ; 19 -> 57//28 = 2
    thirds = [depth_third(l, 28) for l in (0, 9, 10, 18, 19, 27)]
    assert thirds == ["early", "early", "middle", "middle", "late", "late"]


def test_small_models_keep_ends_apart():
    # 3 layers: k = min(3, 3 // 2) = 1 per end
    assert entropy_groups([0.5, 0.2, 0.9]) == ["mid", "most focused", "most diffuse"]
    # ties: stable order -> the earlier layer is the more focused one
    assert entropy_groups([1.0, 1.0]) == ["most focused", "most diffuse"]


def test_subset_of_layers_is_labelled():
    t = layer_entropy_table(seven_layers()[[0, 6]], layers=[3, 27], n_layers=28)
    assert t["layer"].tolist() == [3, 27] and t["depth"].tolist() == ["early", "late"]
    with pytest.raises(ValueError):
        layer_entropy_table(seven_layers(), layers=[0, 1])


def test_entropy_by_step_long_format():
    layout = TokenLayout.from_prompt([1, 2])
    layout.append_step([3, 4], [0.5, 0.4])
    layout.append_step([5], [0.9])
    attention = {0: np.full((2, 1, 1, 2, 4), 0.25), 1: np.full((2, 1, 1, 1, 5), 0.2)}
    run = CapturedRun("r", "p", "isolated", layout, list("abcde"), [4, 7], attention)
    df = entropy_by_step(run)
    assert df[["step", "layer"]].values.tolist() == [[0, 4], [0, 7], [1, 4], [1, 7]]
    assert df["entropy"].tolist() == pytest.approx([math.log(4)] * 2 + [math.log(5)] * 2, abs=1e-8)
