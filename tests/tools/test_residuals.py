"""Residuals under two conditions: zero for identical replays, and exactly where the mask lets siblings meet."""

from __future__ import annotations

import numpy as np
import pytest

import tempo_lens
from tempo_lens.backends import backend_for
from tempo_lens.errors import InvalidInputError
from tempo_lens.tools import Condition, residual_difference, residual_figure
from tempo_lens.tools.common import cached_replay


def test_the_same_condition_twice_differs_nowhere(tiny_llama, llama_run):
    df = residual_difference(tiny_llama, llama_run, Condition("isolated"), Condition("isolated"), steps=[0, 1])
    assert len(df) == tiny_llama.cfg.n_layers * sum(len(llama_run.layout.step_range(s)) for s in (0, 1))
    assert np.allclose(df["distance"], 0) and np.allclose(df["cosine"], 1)


def test_isolated_against_visible_by_hand(tiny_llama, llama_run):
    """Step 0's first sibling sees the same keys under both masks (0 apart); its later siblings see their elders."""
    df = residual_difference(tiny_llama, llama_run, steps=[0], layers=[-1])
    last = tiny_llama.cfg.n_layers - 1
    assert set(df["layer"]) == {last}
    first, later = df[df["rank"] == 0], df[df["rank"] > 0]
    assert first["distance"].max() < 1e-4 and (later["relative"] > 1e-3).all()
    name = f"blocks.{last}.hook_resid_post"
    a = cached_replay(backend_for(tiny_llama), llama_run.layout, Condition("isolated"), [name]).cache[name]
    b = cached_replay(backend_for(tiny_llama), llama_run.layout, Condition("visible"), [name]).cache[name]
    i = int(later["physical"].iloc[0])
    assert later["distance"].iloc[0] == pytest.approx(float((a[i] - b[i]).double().norm()), rel=1e-6)
    assert residual_figure(df).data[0].z.shape == (1, len(df))


def test_refusals(tiny_llama, llama_run):
    with pytest.raises(InvalidInputError, match="unknown hook"):
        residual_difference(tiny_llama, llama_run, hook="z")
    with pytest.raises(InvalidInputError, match="layers"):
        residual_difference(tiny_llama, llama_run, layers=[99])
    assert tempo_lens.tools.residual_difference is residual_difference
