"""Intra-step attention on a hand-built 3-sibling step."""

from __future__ import annotations

import numpy as np
import pytest

from tempo_lens.analysis import intra_step_attention, intra_step_table
from tempo_lens.capture import CapturedRun
from tempo_lens.layout import TokenLayout


def make_layout() -> TokenLayout:
    layout = TokenLayout.from_prompt([1, 2])  # physical 0, 1
    layout.append_step([5, 6, 7], [0.5, 0.3, 0.2])  # step 0: 2, 3, 4
    layout.append_step([8], [0.9])  # step 1: 5
    return layout


# Step 0, two layers, one head, queries 2, 3, 4 over keys 0..4 (visible-mode shape: causal among siblings).
LAYER0 = [[0.6, 0.2, 0.2, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]]
LAYER1 = [[0.2, 0.2, 0.6, 0.0, 0.0], [0.2, 0.2, 0.0, 0.6, 0.0], [0.4, 0.0, 0.2, 0.0, 0.4]]


def visible_step() -> np.ndarray:
    return np.array([LAYER0, LAYER1]).reshape(2, 1, 1, 3, 5)


def test_intra_step_by_hand():
    df = intra_step_attention(visible_step(), make_layout(), 0)
    # layer mean: q2 [.4,.2,.4,0,0]  q3 [.3,.2,.1,.4,0]  q4 [.3,.1,.2,.1,.3]
    assert df["physical"].tolist() == [2, 3, 4] and df["rank"].tolist() == [0, 1, 2]
    assert df["to_self"].tolist() == pytest.approx([0.4, 0.4, 0.3])
    assert df["to_siblings"].tolist() == pytest.approx([0.0, 0.1, 0.3])  # q3: key2 ; q4: keys 2,3 = .2+.1
    assert df["to_earlier"].tolist() == pytest.approx([0.6, 0.5, 0.4])  # keys 0,1
    assert (df["n_siblings"] == 3).all()


def test_isolated_has_no_sibling_mass():
    # Isolated: each row puts its weight on earlier keys and itself only.
    rows = np.array([[0.5, 0.2, 0.3, 0, 0], [0.1, 0.1, 0, 0.8, 0], [0.3, 0.3, 0, 0, 0.4]]).reshape(1, 1, 1, 3, 5)
    df = intra_step_attention(rows, make_layout(), 0)
    assert df["to_siblings"].tolist() == pytest.approx([0, 0, 0])
    assert df["to_self"].tolist() == pytest.approx([0.3, 0.8, 0.4])


def test_single_sibling_step_is_empty():
    df = intra_step_attention(np.full((1, 1, 1, 1, 6), 1 / 6), make_layout(), 1)
    assert df.empty and "to_siblings" in df.columns


def test_table_over_runs():
    layout = make_layout()
    run = CapturedRun(name="r", prompt="p", mode="visible", layout=layout,
                      token_strings=["a", "b", " c1", " c2", " c3", "d"], layers=[0, 3],
                      attention={0: visible_step(), 1: np.full((2, 1, 1, 1, 6), 1 / 6)})
    df = intra_step_table([run])
    assert len(df) == 3 and set(df["mode"]) == {"visible"} and df["token"].tolist() == [" c1", " c2", " c3"]
    assert df["prob"].tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert df["to_siblings"].mean() == pytest.approx(0.4 / 3)


def test_controls_are_read_by_the_mask_that_produced_them(tiny_llama, tmp_path):
    """An experiment gives its generated runs; its control replays (asked for) carry their own mask and positions.

    The visible-mask replay of an isolated generation attends to siblings: it must not count as isolated,
    where intra-step attention is 0 by construction.
    """
    from tempo_lens.capture import as_runs
    from tempo_lens.experiment import config_from_dict, load_experiment, run_experiment, save_experiment

    config = config_from_dict({"prompts": ["t1 t17 t42"], "threshold": 1e-6, "max_parallel": 3, "max_steps": 3,
                               "mode": "isolated", "controls": ["unique_positions", "toggled_mask"]})
    experiment = load_experiment(save_experiment(run_experiment(config, tiny_llama), tmp_path / "exp"))
    assert [r.name for r in as_runs(experiment)] == [r.name for r in experiment.generated()]
    everything = as_runs(experiment, controls=True)
    assert len(everything) == 3 and {r.mode for r in everything} == {"isolated"}
    assert {(r.mask, r.positions) for r in everything} == {("isolated", "shared"), ("isolated", "unique"), ("visible", "shared")}
    assert (intra_step_table(experiment)["to_siblings"] == 0).all()
    table = intra_step_table(everything)
    assert (table[table["mode"] == "isolated"]["to_siblings"] == 0).all()
    assert (table[table["mode"] == "visible"]["to_siblings"] > 0).any()
