"""Figures build from analysis frames and carry the expected traces (no image export)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from tempo_lens.figures import charts as figures
from tempo_lens.analysis import ci_summary, entropy_by_step, head_specialisation, ratio_table
from tempo_lens.capture import CapturedRun
from tempo_lens.layout import TokenLayout


def make_run(mode: str) -> CapturedRun:
    layout = TokenLayout.from_prompt([1, 2, 3])  # 0..2
    layout.append_step([4, 5], [0.6, 0.3])  # step 0: 3, 4
    layout.append_step([6], [0.9])  # step 1: 5
    layout.append_step([7, 8, 9], [0.4, 0.3, 0.2])  # step 2: 6, 7, 8
    layout.append_step([10], [0.8])  # step 3: 9
    layout.prune([4], at_step=1, score=0.3)
    rng = np.random.default_rng(0)
    attention = {}
    for step in range(layout.n_steps):
        sib = layout.step_range(step)
        a = rng.random((3, 1, 4, len(sib), sib.stop))
        a *= ~layout.blocked(mode, n_queries=len(sib), n_keys=sib.stop).numpy()
        attention[step] = a / a.sum(-1, keepdims=True)
    tokens = ["<|begin_of_text|>", "The", " cat", " sat", " lay", " on", " the", " a", " my", "\n"]
    return CapturedRun(name=f"run-{mode}", prompt="The cat", mode=mode, layout=layout, token_strings=tokens,
                       layers=[0, 5, 9], attention=attention)


def html(fig: go.Figure) -> str:
    assert isinstance(fig, go.Figure)
    return fig.to_html(include_plotlyjs=False, full_html=False)


def test_ratio_figures():
    runs = [make_run("isolated"), make_run("visible")]
    df = ratio_table(runs)
    fig = figures.ratio_figure(df)
    assert [t.name for t in fig.data] == ["isolated", "visible"]
    assert len(fig.data[0].x) == int(df[(df["mode"] == "isolated")]["missing_reason"].isna().sum())
    assert '"name":"isolated"' in html(fig)
    summary = ci_summary(df, by="mode", n_boot=200)
    out = html(figures.ratio_ci_figure(summary))
    assert '"name":"visible"' in out and "error_y" in out


def test_entropy_figure():
    df = entropy_by_step(make_run("isolated"))
    fig = figures.entropy_figure(df)
    assert [t.name for t in fig.data] == ["step 0", "step 1", "step 2", "step 3"]
    assert list(fig.data[0].x) == [0, 5, 9]
    assert [t.name for t in figures.entropy_figure(df, steps=[1]).data] == ["step 1"]


def test_head_scatter():
    run = make_run("isolated")
    df = head_specialisation(run.attention[2], run.layout, 2, "isolated", n_kv_heads=2)
    out = html(figures.head_scatter(df))
    for group in set(df["group"]):
        assert f'"name":"{group}"' in out
    assert '"name":"recent = distant"' in out


def test_attention_heatmap_marks_tokens():
    run = make_run("visible")
    fig = figures.attention_heatmap(run, 2)
    labels = list(fig.layout.xaxis.ticktext)
    assert labels[0] == "0:&lt;|begin_of_text|&gt;"
    assert labels[3] == "3:∥ sat" and labels[4] == "4:✗∥ lay" and labels[5] == "5: on"
    assert np.asarray(fig.data[0].z).shape == (3, 9)
    one = figures.attention_heatmap(run, 2, layer=5, head=1)
    assert np.allclose(one.data[0].z, run.attention[2][1, 0, 1])
    assert "attention" in html(one)


def test_branching_figure():
    run = make_run("isolated")
    fig = figures.branching_figure(run.layout, run.token_strings)
    assert [t.name for t in fig.data] == ["kept", "pruned", "most likely"]
    assert list(fig.data[1].text) == ["<s> lay</s>"] and list(fig.data[1].x) == [0]
    assert list(fig.data[2].x) == [0, 1, 2, 3]
    assert "⏎" in fig.data[0].text[-1] and html(fig)


def test_step_slider_shows_one_step_at_a_time():
    run = make_run("isolated")
    per_step = {s: figures.attention_heatmap(run, s) for s in sorted(run.attention)}
    fig = figures.step_slider(per_step, active=sorted(run.attention)[-1])
    n = sum(len(f.data) for f in per_step.values())
    assert len(fig.data) == n
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == [str(s) for s in sorted(run.attention)]
    for i, step in enumerate(slider.steps):
        visible = step.args[0]["visible"]
        assert sum(visible) == len(per_step[int(step.label)].data)  # only that step's traces
        assert step.args[1]["title"].text == per_step[int(step.label)].layout.title.text
    assert [t.visible for t in fig.data][-len(per_step[sorted(run.attention)[-1]].data):] == [True] * len(per_step[sorted(run.attention)[-1]].data)
    assert fig.layout.title.text == per_step[sorted(run.attention)[-1]].layout.title.text


def test_head_scatter_axes_fit_the_points_and_labels_stay_readable():
    import pandas as pd

    few = pd.DataFrame({"head": [0, 1], "kv_head": [0, 0], "recent": [0.30, 0.40], "distant": [0.20, 0.25],
                        "entropy": [1.0, 2.0], "max": [0.5, 0.6], "group": ["Balanced", "Diffuse"]})
    fig = figures.head_scatter(few)
    lo, hi = fig.layout.xaxis.range
    assert 0.1 < lo < 0.2 and 0.4 < hi < 0.5  # fitted to 0.20..0.40, not from 0
    assert all(t.mode == "markers+text" for t in fig.data if t.name != "recent = distant")
    many = pd.DataFrame({"layer": np.repeat(np.arange(5), 4), "head": np.tile(np.arange(4), 5), "kv_head": 0,
                         "recent": np.linspace(0.1, 0.3, 20), "distant": np.linspace(0.3, 0.1, 20), "entropy": 1.0,
                         "max": 0.5, "group": "Balanced"})
    fig = figures.head_scatter(many)
    points = next(t for t in fig.data if t.name == "Balanced")
    assert points.mode == "markers" and list(points.text[:2]) == ["L0H0", "L0H1"]


def test_head_map_figure():
    import pandas as pd

    cells = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "sink_share": [0.9, 0.1, 0.5, 0.2],
                          "parallel_coef": [0.0, 0.5, -0.25, np.nan]})
    fig = figures.head_map_figure(cells)
    sink, coef = fig.data
    assert np.asarray(sink.z).tolist() == [[0.9, 0.1], [0.5, 0.2]]
    assert coef.zmin == -0.5 and coef.zmax == 0.5  # symmetric around 0
    assert np.isnan(np.asarray(coef.z, dtype=float)[1, 1])
