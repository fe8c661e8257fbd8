"""Head measures over a run, on hand-built attention whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tempo_lens.analysis.head_measures import head_intervals, run_head_measures, standout_heads
from tempo_lens.errors import InvalidInputError
from tempo_lens.layout import TokenLayout


def _layout() -> TokenLayout:
    layout = TokenLayout.from_prompt([1, 10, 11])  # logical 0 1 2
    layout.append_step([20, 21], [0.5, 0.4])  # physical 3 4, logical 3
    layout.append_step([22], [0.9])  # physical 5, logical 4
    return layout


def _attention(layout: TokenLayout, weights_for_head) -> dict[int, np.ndarray]:
    """Two layers, two heads; head h of every layer puts all of each row's weight on ``weights_for_head(h, q)``."""
    out = {}
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        a = np.zeros((2, 1, 2, len(r), r.stop))
        for h in range(2):
            for qi, q in enumerate(r):
                a[:, 0, h, qi, weights_for_head(h, q)] = 1.0
        out[step] = a
    return out


def test_sink_head_and_self_head():
    layout = _layout()
    attention = _attention(layout, lambda h, q: 0 if h == 0 else q)  # head 0: the sink; head 1: itself
    df = run_head_measures(attention, layout, "isolated")
    sink = df[df["head"] == 0]
    own = df[df["head"] == 1]
    assert (sink["sink"] == 1.0).all() and (own["sink"] == 0.0).all()
    # rows: 3 -> logical 3, 4 -> 3, 5 -> 4; the sink is at logical 0: mean distance (3 + 3 + 4) / 3
    assert sink["distance"].to_numpy() == pytest.approx([10 / 3] * 2)
    assert own["distance"].to_numpy() == pytest.approx([0.0, 0.0])
    assert df["entropy"].to_numpy() == pytest.approx(np.zeros(4), abs=1e-8)


def test_uniform_rows_have_log_n_entropy_over_visible_keys_only():
    layout = _layout()
    attention = {}
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        visible = ~layout.blocked("isolated", n_queries=len(r), n_keys=r.stop).numpy()
        p = visible / visible.sum(-1, keepdims=True)
        attention[step] = np.broadcast_to(p, (1, 1, 1, *p.shape)).copy()
    df = run_head_measures(attention, layout, "isolated")
    # row 3 sees 0 1 2 3 (4 keys), row 4 sees 0 1 2 4 (4), row 5 sees 0..5 (6)
    assert df["entropy"].iloc[0] == pytest.approx((np.log(4) * 2 + np.log(6)) / 3)
    assert df["sink"].iloc[0] == pytest.approx((0.25 * 2 + 1 / 6) / 3)


def test_intervals_are_over_runs():
    runs = [pd.DataFrame({"layer": [0, 0], "head": [0, 1], "distance": [d, 1.0], "sink": [0.5, 0.1], "entropy": [1.0, 2.0]})
            for d in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)]  # 8 runs: a studentized interval well above head 1's 1.0
    table = head_intervals(runs, n_boot=500)
    head0 = table[table["head"] == 0].iloc[0]
    assert head0["n_runs"] == 8 and head0["distance"] == pytest.approx(4.5)
    assert 1.0 < head0["distance_lo"] < 4.5 < head0["distance_hi"]
    head1 = table[table["head"] == 1].iloc[0]
    assert head1["distance_lo"] == head1["distance_hi"] == 1.0
    top = standout_heads(table, "distance", n=1)
    assert top[["layer", "head"]].values.tolist() == [[0, 0]]
    with pytest.raises(InvalidInputError, match="unknown head measure"):
        standout_heads(table, "recent")


def test_a_run_without_captures_is_refused():
    with pytest.raises(InvalidInputError, match="no captured step"):
        run_head_measures({}, _layout(), "isolated")
