"""Views build from captured runs with the expected data (non-empty, shapes, slider, struck-through pruned tokens)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from tempo_lens.errors import InvalidInputError
from tempo_lens.views import entropy_heatmap, head_grid, lattice_edges, token_lattice
from tests.figures.test_charts import make_run


def html(fig: go.Figure) -> str:
    assert isinstance(fig, go.Figure)
    return fig.to_html(include_plotlyjs=False, full_html=False)


def test_lattice_edges_are_the_mean_attention():
    run = make_run("visible")
    edges = lattice_edges(run)
    step2 = [e for e in edges if e["step"] == 2 and e["query"] == 7]
    expected = run.attention[2].mean(axis=(0, 1, 2))[1]
    assert {e["key"] for e in step2} == set(range(7)) - {4}  # not itself, not later keys, not the pruned key 4
    for e in step2:
        assert e["weight"] == pytest.approx(expected[e["key"]])
        assert e["parallel"] == (e["key"] in (3, 4, 6, 8))
    one = lattice_edges(run, layer=5, head=1)
    assert one[0]["weight"] == pytest.approx(run.attention[0][1, 0, 1, 0, 0])
    with pytest.raises(InvalidInputError, match="not captured"):
        lattice_edges(run, layer=3)


def test_token_lattice_side_by_side_with_slider():
    runs = [make_run("isolated"), make_run("visible")]
    fig = token_lattice(*runs, thresholds=(0.05, 0.1, 0.3), prompt_tokens=None)
    nodes = [t for t in fig.data if t.mode == "markers+text"]
    assert len(nodes) == 2 and all(len(t.x) == len(runs[0].layout) for t in nodes)
    assert "<s> lay</s>" in nodes[0].text  # token 4 was pruned
    assert list(nodes[0].y[:5]) == [0, 0, 0, 0, -1] and list(nodes[0].x[:5]) == [0, 1, 2, 3, 3]
    arcs = [t for t in fig.data if t.mode == "lines"]
    assert arcs and all(len(t.x) > 0 for t in arcs)
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == ["0.05", "0.1", "0.3"]
    shown = [sum(s.args[0]["visible"]) for s in slider.steps]
    assert shown[0] == len(fig.data) and shown[0] > shown[1] > shown[2] >= 2  # the nodes always stay
    assert fig.layout.xaxis.ticktext[-1] == "s3"
    html(fig)


def test_entropy_heatmap_is_layer_by_step():
    runs = [make_run("isolated"), make_run("visible")]
    fig = entropy_heatmap(*runs)
    assert len(fig.data) == 2
    for trace in fig.data:
        z = np.asarray(trace.z)
        assert z.shape == (3, 4) and np.isfinite(z).all() and list(trace.y) == [0, 5, 9]
    html(fig)


def test_head_grid_tiles_every_layer_and_head():
    run = make_run("visible")
    fig = head_grid(run, 2)
    other, parallel = (np.asarray(t.z, dtype=float) for t in fig.data)
    assert other.shape == (3 * 4 - 1, 4 * 10 - 1)  # 3 layers x 3 queries, 4 heads x 9 keys, 1-cell gaps
    tile = run.attention[2][1, 0, 2]  # layer 5 (second captured), head 2
    region = np.where(np.isnan(other), parallel, other)[4:7, 20:29]
    np.testing.assert_allclose(region, tile)
    assert np.isnan(parallel[:, :3]).all() and not np.isnan(parallel[0, 3])  # keys 3, 4 are parallel
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L5", "L9"]
    html(fig)


def test_views_need_captured_attention():
    with pytest.raises(InvalidInputError, match="capture=True"):
        token_lattice(make_run("visible").layout)
