"""The default embedded model: the nnsight backend and the bridge make the same generation."""

from __future__ import annotations

import numpy as np
import pytest

from tempo_lens.generation import generate, generate_batch
from tempo_lens.pruning import AttentionPruning

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_bridge_and_nnsight_agree(embedded_model, embedded_nnsight, mode):
    settings = dict(threshold=0.05, max_steps=8, mode=mode, keep_logits=True, capture=True, pruning=AttentionPruning())
    bridge = generate(embedded_model, "The cat sat on the", **settings)
    nnsight = generate(embedded_nnsight, "The cat sat on the", **settings)
    assert max(bridge.layout.step_sizes()) >= 2, "the check needs a parallel step"
    assert nnsight.layout.token_ids == bridge.layout.token_ids
    assert list(nnsight.layout.pruned_at) == list(bridge.layout.pruned_at)
    for ours, theirs in zip(nnsight.step_logits, bridge.step_logits):
        assert (ours - theirs).abs().max().item() < 1e-4
    for step in bridge.capture.step_ids:
        assert np.abs(np.asarray(nnsight.capture[step]) - np.asarray(bridge.capture[step])).max() < 1e-5
    ours, theirs = nnsight.to_json_dict(), bridge.to_json_dict()
    assert ours.keys() == theirs.keys() and ours["model"] == theirs["model"] and ours["text"] == theirs["text"]


def test_saved_runs_have_one_format(embedded_model, embedded_nnsight, tmp_path):
    from tempo_lens.generation.result import load_result

    for name, model in (("bridge", embedded_model), ("nnsight", embedded_nnsight)):
        generate(model, "The cat sat on the", threshold=0.05, max_steps=4, capture=True).save(tmp_path / name)
    assert sorted(p.name for p in (tmp_path / "bridge").iterdir()) == sorted(p.name for p in (tmp_path / "nnsight").iterdir())
    assert load_result(tmp_path / "nnsight").layout.token_ids == load_result(tmp_path / "bridge").layout.token_ids


def test_batch_agrees_with_the_bridge(embedded_model, embedded_nnsight):
    prompts = ["The cat sat on the", "Once upon a time", "2 + 2 ="]
    bridge = generate_batch(embedded_model, prompts, threshold=0.05, max_steps=5)
    nnsight = generate_batch(embedded_nnsight, prompts, threshold=0.05, max_steps=5)
    assert [r.layout.token_ids for r in nnsight] == [r.layout.token_ids for r in bridge]
